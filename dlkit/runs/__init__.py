"""Run folders: their records (records.py), checkpoints (checkpoints.py), moves (relocate.py) and the
queries `dlkit runs` answers (query.py)."""
