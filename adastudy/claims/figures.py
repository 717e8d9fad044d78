"""The ids of the report figures that show each claim's evidence: one name each, shared
by the claims (which cite them) and the report (which draws them).

A figure drawn once per study variant gets the variant's name appended
(`adastudy.report.content.figure_id`): "heatmaps", "heatmaps-c1000".
"""

HEATMAPS = "heatmaps"
CONVERGENCE = "convergence"
THEORY = "theory"
PROBABILITY = "probability"
LN_B_RATIO = "ln-b-ratio"
SCALE_VS_CLASSES = "scale-vs-classes"
ADACOS_VS_TUNED = "adacos-vs-tuned"
STABILITY_MAP = "stability-map"
STABILITY_RUNS = "stability-runs"
