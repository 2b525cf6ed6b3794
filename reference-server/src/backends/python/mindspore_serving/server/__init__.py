"""`mindspore_serving.server`: the registration API (`register`) that
`servable_config.py` files import. Starting servables and servers is the
reference server's own business (`reference-server --model-repository`), so
the start-up functions of MindSpore's startup scripts are not provided."""

from . import register  # noqa: F401
from . import distributed  # noqa: F401
