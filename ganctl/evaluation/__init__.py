"""Evaluation: the metrics (FID, precision and recall, label accuracy), the feature classifier that
ganctl ships and fits, Inception features, and the evaluator the loop and `ganctl eval` share."""
