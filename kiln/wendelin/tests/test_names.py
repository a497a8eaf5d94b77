"""Names that become directories or catalog rows are checked to their last character."""

import pytest

from kiln.wendelin.policies import check_policy_name
from kiln.wendelin.streams import check_stream_name

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("check", [check_stream_name, check_policy_name])
@pytest.mark.parametrize("name", ["a.nl\n", "a\n", "ok\nevil"])
def test_a_trailing_newline_is_refused(check, name: str) -> None:
    # `POST /tags/a.nl%0A` once made a stream directory named with a newline.
    with pytest.raises(ValueError, match="cannot name"):
        check(name)
