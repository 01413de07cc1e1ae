"""The forecasters: the forecaster half of the model-family protocol (``module``), the network
contract (``nets``), the LSTM and Transformer networks and their config sections."""
