"""A plug-in package of a user's own, outside ``src/``: an A2C agent (``a2c``), an action
scheme (``actions``) and a data source (``sources``), with their config files under ``conf/``.
The tests select them from the command line with ``hydra.searchpath=[file://.../conf]`` and
this folder's parent on ``PYTHONPATH``; nothing under ``src/`` names them."""
