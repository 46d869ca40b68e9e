"""Source selection: predict which source tasks help a target (selectors), and score a predicted
ranking against measured transfer (scores, with confidence intervals over seeds)."""
