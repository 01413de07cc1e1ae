"""The run itself: check the config (``entry``), build its plug-ins (``build``), fit them in the
one Trainer (``trainer``, ``job``), report (``report``, ``console``, ``plots``) and log
(``tracking``, the logger plug-in)."""
