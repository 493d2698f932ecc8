"""The experiment configuration: its model, its safe YAML loader and the parse entry point.

>>> parsed = parse_experiment_config(yaml_text, cluster_defaults)
>>> parsed.config.searcher.metric, parsed.data  # validated model, JSON-able dict for the database
"""

from stalwart_master.expconf.loader import load_yaml
from stalwart_master.expconf.model import ExperimentConfig
from stalwart_master.expconf.parse import (
    ParsedConfig,
    experiment_config_json_schema,
    merge_defaults,
    parse_experiment_config,
)

__all__ = [
    "ExperimentConfig",
    "ParsedConfig",
    "experiment_config_json_schema",
    "load_yaml",
    "merge_defaults",
    "parse_experiment_config",
]
