"""The log filter on Hydra's console: passwords in a line (its overrides) are shown as ***."""

from __future__ import annotations

import logging

from experiments.runtime.masking import MaskCredentials


def _record(msg: str, *args) -> logging.LogRecord:
    return logging.LogRecord("hydra", logging.INFO, __file__, 1, msg, args or None, None)


def test_a_password_in_a_launcher_line_is_masked_and_the_rest_kept() -> None:
    record = _record(
        "\t#%d : %s", 0, r"data=sql data.uri=postgresql\://bars\:s3cret@db\:5432/x seed=1"
    )
    assert MaskCredentials().filter(record) is True
    assert (
        record.getMessage()
        == r"	#0 : data=sql data.uri=postgresql\://bars\:***@db\:5432/x seed=1"
    )


def test_a_line_without_a_password_is_left_as_it_is() -> None:
    record = _record("Launching %d jobs locally", 2)
    assert MaskCredentials().filter(record) is True
    assert record.msg == "Launching %d jobs locally" and record.args == (2,)
