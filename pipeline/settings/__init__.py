"""Settings, torch-free: `fields.py` declares a setting (default, flag, help) once; `config.py` holds the
training configs and the model registry, `scoring_config.py` the configs of predict, evaluate and verify. The
commands' options and the Python API are generated from these fields. (A run's config.json, which also records
what training found, is pipeline/training/run_config.py.)"""
