"""Preference-pair data preparation: source readers and the harmless + helpful mixture builder.

Entry point: `data_prep.prepare.prepare(recipe, overrides)` (the `basealign prepare` CLI).
Reading back: `data_prep.prepare.is_pairs_folder`, `data_prep.prepare.load_pairs`.
"""
