"""`dlkit report`: a trained run's predictions on a split, scored (metrics.py), drawn (figures.py) and written as a
folder a person can look at (page.py, report.py); `runs compare --report` puts reports side by side (compare.py)."""
