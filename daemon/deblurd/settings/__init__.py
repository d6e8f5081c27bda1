"""deblurd.settings: the config file as strict pydantic models, and how it is loaded.

``load_settings(path, env)`` reads ``deblurd.toml`` plus ``DEBLURD_`` environment overrides
and returns the validated ``DeblurdSettings`` (raises ``deblurd.errors.ConfigError``);
``check_config(path)`` is ``deblurd check-config``. ``deblurd.settings.docs`` generates the
documented default config and the JSON schema (``tools/gen_config.py``).
"""

from deblurd.settings.load import EX_CONFIG, check_config, load_settings
from deblurd.settings.models import DeblurdSettings

__all__ = ["EX_CONFIG", "DeblurdSettings", "check_config", "load_settings"]
