"""Every threshold a verdict is judged against, each with the reason for its value.

The confidence level and the tests themselves live in `adastudy.stats` (95 % intervals,
one-sided tests at 2.5 %, Holm over the parts of a claim).
"""

from __future__ import annotations

import math

from adastudy import theory

#: The metric selecting each head's best tuned configuration: the validation pairs,
#: never the test pairs that the claims are judged on. A selection that lacks it is
#: "not tested", never quietly made on the test pairs.
SELECTION_METRIC = "val_accuracy"

#: Differences of the study's metric smaller than this do not count as worse (C4, C9,
#: the answer): half a point of verification accuracy. Results of one recipe move by
#: that much from seed to seed at CPU scale, and published face-recognition tables
#: treat smaller gaps as ties; "matches" means "no worse than this".
NEGLIGIBLE = 0.005

#: C8: "depends strongly" means the standard deviation of the grid's true
#: configuration means (the spread of their means with the seed noise taken out) is at
#: least this: a configuration picked at random is typically half a point of accuracy
#: from the grid's average, a difference a practitioner would tune for. A standard
#: deviation, unlike the best − worst range, does not grow with the number of grid
#: points when the configurations do not differ.
STRONG_SD = NEGLIGIBLE

#: C1 / C2: a mean target probability of at least 0.9 counts as "≈ 1": at P = 0.9 the
#: cross-entropy gradient on the target logit (1 − P) has fallen to a tenth of its
#: start, i.e. the sample has stopped pulling.
P_SATURATED = 0.9

#: C2: "far from the centre" means beyond θ0 = π/4, the angle where fixed AdaCos puts
#: the strongest supervision; a head that already gives P ≈ 1 there supervises weakly.
FAR_ANGLE_DEG = math.degrees(theory.THETA0_RAD)

#: C4: the scales swept without a margin must include this many, with at least one on
#: each side of s_f: otherwise "s_f is near the best scale" is judged at the edge of
#: the curve, where the best scale may lie outside the grid.
MIN_SCALES = 3

#: C5: B_avg counts as ≈ C − 1 within a factor of 2. Through s = ln B / cos θ a factor
#: of 2 in B moves the AdaCos scale by √2 ln 2 ≈ 1, less than one unit of s.
B_FACTOR = 2.0
#: C5: the approximation "holds during training" when it holds at this fraction of the
#: logged training windows.
HOLD_FRACTION = 0.8

#: C6: the partial correlation of s(t) and θ_med(t), beyond a smooth trend in the step,
#: counts as "tracks" from 0.3 on, the conventional lower edge of a moderate
#: correlation. A scale on a schedule of its own shares the trend but not the
#: window-to-window movements of θ_med, and stays near 0.
RHO_TRACKS = 0.3
#: C6: the degree of the polynomial in the step removed from s and θ_med before they
#: are correlated: a cubic follows a decaying schedule (linear, exponential, cosine)
#: over the windows closely enough that what remains is movement, not trend.
TREND_DEGREE = 3
#: C6: logged windows needed (with θ_med < 45°, where s(t) depends on θ_med) per run:
#: a cubic trend takes 4 of them, and a correlation of the rest needs several more.
MIN_WINDOWS = 10
#: C6: a dynamic scale "runs away" when, in a window where θ_med is still ≥ 45°, it
#: exceeds this multiple of its start s_f = √2 ln(C − 1): by ln B ≈ ln(C − 1) + s²σ²/2
#: that needs B_avg ≈ (C − 1)², which only the run-away of the update gives.
RUNAWAY_FACTOR = 2.0

#: C7: the θ_med level whose first crossing counts as "converged", fixed before the
#: data are seen: θ0 = 45°, where AdaCos starts to adapt s to θ_med. A study may set
#: another one in `[claims] c7_level_deg` (it must be one of `train.theta_levels_deg`).
C7_LEVEL_DEG = 45.0
#: C7: "faster" means reaching the level in at least 10 % fewer steps than the tuned
#: head: a smaller gain is within what a change of learning-rate schedule gives, and
#: would not change anyone's choice of loss.
MIN_SPEEDUP = 0.10

#: C10: "stable" needs no divergence, and enough runs in the setting that the one-sided
#: 97.5 % Clopper-Pearson bound on its divergence rate is below 20 % (17 runs).
MAX_DIVERGENCE_RATE = 0.2
