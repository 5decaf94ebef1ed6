"""Statistics of unit concepts: effects, bootstrap intervals and p-values against null controls.

Inputs are long tables with one row per (unit, sample, step), as the measure stage writes
them: ``changes`` for the tuned units, and ``nulls`` for the controls, with a ``control``
column and negative unit ids:

- ``random_direction``: sweeps along random directions in activation space, each a control
  "unit", as long as a typical unit's sweep;
- ``rerender``: a chain of renders of the same activation (render, re-encode, render...),
  where any change is noise of the render/re-encode cycle (used for motion, below).

For each unit u and measure m, the change of a sample is its last step minus its first
(:func:`pipeline.measures.measure_changes`: signed circular differences, motion as is).

- ``mean_change``: the mean change over the unit's samples; ``trimmed_change``: the 20%
  trimmed mean, on which the effect and the test of the change rest. One failed render or
  object mask among 20 samples moves a mean arbitrarily far; the trimmed mean ignores it
  and loses little efficiency on clean data.
- ``natural_change``: the trimmed change in standard deviations of the measure over
  natural samples (NaN without them, and for motion, which a single render lacks).
- ``t_mean``: Student's t of the mean change (the mean over its standard error), how
  reliably the sweep moves the measure; with ``natural_change`` it names the unique label
  (:func:`label_strength`).
- ``w_distance``: how far the unit's sweep moved the generator's latent, the median over
  its samples of the distance in w between its last step and its first.
- Against random directions a unit is compared twice: with its changes as they are
  (``as_is``), and per unit of distance in w (``per_w``: each sample's change over its
  sweep's ``w_distance``, for the unit and for every direction alike). ``effect_as_is`` and
  ``effect_per_w`` are ``(trimmed - null_mean) / null_scale`` of each, where ``null_mean``
  and ``null_scale`` are the mean and standard deviation over random directions of their
  trimmed change on the same footing. An effect reads "how many random directions' spreads
  does this unit move the measure" (as is: as far as they move it; per w: distance for
  distance, i.e. where its direction in w points), which makes measures in different units
  comparable. Centring on the null's mean matters for measures that cannot be negative
  (motion): any sweep moves the image a little. The effect is a size: a label needs
  ``|effect| >= min_effect``, but no p-value against the directions.
- ``p_random`` says how unusual the unit is among random directions; it is reported, not
  part of ``p``. Each comparison is a two-sided prediction t-test of the unit's trimmed change against the
  J random directions', with ``J - 1`` degrees of freedom: ``t = (trimmed - null_mean) /
  sqrt(null_scale^2 (1 + 1/J) + excess)``, where ``excess`` is how much larger the squared
  standard error of the unit's trimmed change is than the directions' (0 if smaller), so a
  unit whose samples scatter widely cannot pass on a lucky mean. ``p_random`` is twice the
  smaller of the two p-values (Bonferroni: valid whichever way a unit that is just one
  more random direction happens to look), and ``compared``, ``effect``, ``null_mean``,
  ``null_scale`` and the bootstrap interval are those of the comparison with the smaller
  p-value.
- ``p_change``: whether the sweep changes the measure at all (:func:`change_test`): the
  one-sample trimmed t-test (Yuen) of the unit's per-sample changes against no change.
- For magnitudes that cannot be negative (``image.motion``, how far the image moved), both
  tests are one-sided, and ``p_change`` compares with the re-render chain's changes: a
  unit counts only where it moves the image more than the nulls. A unit that barely acts
  moves it less than any random direction, which is no concept; a two-sided test flagged
  such units, the null units of the validation among them.
- ``p_link``: whether the link learnt anything for the unit at all: the p-value of its
  column of the link against the column that fitting noise alone gives
  (:func:`pipeline.stages.link.column_tests`), the same for all of a unit's measures.
- ``p``: the larger of ``p_change`` and ``p_link``, so a unit must change the measure and
  have a column that is more than fitting noise (an intersection-union test, valid
  without assumptions on how the two relate).
- ``q``: Benjamini-Hochberg over all units x measures (scipy's ``false_discovery_control``).
- ``class_effect_min``, ``class_effect_max``: the smallest and largest of the unit's effects
  within each class (:func:`class_effects`: its samples of one class against the random
  directions' samples of that class, on the chosen footing); ``classes_agree``: no two
  classes have clear effects (``|effect| >= min_effect``) of opposite sign. Where they
  disagree the pooled effect averages two opposite concepts away, so it is not a label;
  the per-class effects are what to read.
- ``selective``: ``q <= q_level``, ``|effect| >= min_effect`` and ``classes_agree``.
- ``ci_low``, ``ci_high``: percentile bootstrap of the effect. Each replicate resamples the
  unit's samples and the random directions (the null's mean and spread rest on a few dozen
  directions and are uncertain too) and picks the footing again, so neither the null nor
  the choice of footing is taken as known.

Why both comparisons. A sweep acts on the image only through the latent it moves, and the
linear link's columns differ in length many times over, depending on how the ridge shares
weight among correlated units. With 2,500 training samples the 512 correlated base units
got long columns that partly cancel one another, random directions moved w up to four
times as far as a planted unit's sweep, and compared as they are, planted units that moved
their measure as far as linear ones went unlabelled; per unit of w they were found. With
450 training samples and heavy shrinkage the base units' columns were short, the planted
units' sweeps moved w five times as far as random directions, and the comparison as is was
the stronger one (effects 18-27 against 3-6 per w). Which footing suits a run depends on
its link, so both are tested and the Bonferroni factor of 2 is the price.

Why the effect against random directions is a size, not a p-value. A random direction of
a layer of width U carries about 1/sqrt(U) of each unit, so a unit that alone moves a
measure is about sqrt(U) of the directions' spreads out, and sqrt(U/k) where k units share
the measure. In a small layer of clean functions (22 units, several sharing object
luminance) the planted units were 2.9-4.6 spreads out; from 24 directions their p-values
stopped at 1e-4 to 2e-2, and Benjamini-Hochberg over units x measures left most of them
unlabelled although their own samples left no doubt (p below 1e-20). Whether a unit
changes a measure is a question about that unit, which its own samples answer
(``p_change``); the directions answer how large the change is against what moving the
layer anywhere does. The price: a unit that behaves like one more random direction
changes measures really, and is labelled wherever it moves one ``min_effect`` spreads
out, as often as a random direction does (at 2 spreads about 5% of its measures; a
label says how far, with its interval, not that the unit is unlike a random direction).

Why the link test. Distance for distance, a sweep that barely moves w looks as aligned as
its direction is, however little it changes: a pure-noise unit gets a ridge-fitted column
a twentieth as long as a planted unit's, pointing wherever the link's residual lies (what
r cannot predict, such as the background colour), and per unit of w a quarter of the
validation's null units came out selective for background redness. Their columns are
fitting noise, which the link test tells from a learnt column directly; a floor on the
distance (the re-render chain's wander in w) also stopped them, but cost a held-back
planted unit with a short, learnt column its label.

What a label means: two labels. A sweep sets one unit and keeps the others, as in the paper,
so through a linear link it shows what the unit carries beyond the rest of the layer: its
unique label (:func:`unit_summary`). The sweep alone does not say which of its changes
those are: the link's column carries whatever the latents co-vary with beyond the other
units, and a sweep that leaves the generator's domain distorts. So the label names a
change that the unit's residual (what the rest of the layer does not predict of it,
:func:`held_out_residuals`) is associated with across natural samples, in the direction
the sweep made it (:func:`residual_confirmed`). A unit that mixes a statistic the layer
carries elsewhere with one it lacks points mostly at the latter, so the validation scores
the unique label against the component that the unit's residual reads, and gives a unit
whose residual reads none of its components no unique truth
(:func:`pipeline.validation.unique_truths`). What a unit responds to across natural samples
is its tuning label (:func:`unit_tuning`): the within-class rank association of its
activation with each measure over the accepted samples, tested against within-class
permutations, which needs no generator and no null directions; its redundancy
(:func:`unit_redundancy`, the held-out R² from the other units) says how much of the unit the
rest of the layer carries, and so how little is left for a unique label. The unique
label is given only to units whose sweep moves their own re-encoded activation (the
controllability gate of :func:`unit_summary`): a unit the generator cannot set says nothing
through its sweep.
Labels follow a hierarchy of the whole object and its parts (:func:`label_candidates`). A
sweep that moves the whole object moves every part with it, and each part's measure then
changes as much as the object's, often more reliably (the body is large and its mask
clean), so a flat ranking named a part for what the whole did. A part measure may carry
either label only where the part changed differently from the whole: its relative measure
(:mod:`pipeline.measures.hierarchy`: the part's value minus the object's, circularly for hue
and orientation, its share of the object's area for area) must itself be selective, by the
sweep's tests (:func:`beyond_whole`) or across natural samples (:func:`tuning_beyond_whole`).
Otherwise the whole object's own measure competes for the label.
The observational alternative, moving every other unit by its regression on the swept one
(and random directions likewise), was measured and not adopted: it labels units by what
co-varies with them, and against random read-outs of the layer, which all move object
area, the planted area units lose their label.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from pipeline.measures import (
    MAGNITUDE_QUANTITIES,
    RELATIVE_QUANTITIES,
    measure_changes,
    quantity_of,
    relative_measures,
    whole_counterpart,
)

RANDOM_DIRECTION = "random_direction"
AS_IS, PER_W = "as_is", "per_w"
RERENDER = "rerender"
MIN_NULL_DIRECTIONS = 3
DEFAULT_MIN_EFFECT = 2.0
TRIM = 0.2
BOOT_UNIT_BLOCK = 8
# Bytes of running draw counts per chunk of resampled_trimmed_means: a few MiB, so each pass stays in the cache.
RUNNING_CHUNK_BYTES = 12 * 2**20

CONCEPT_COLUMNS = (
    "unit", "measure", "n", "mean_change", "trimmed_change", "natural_change", "w_distance",
    "effect_as_is", "effect_per_w", "compared", "null_mean", "null_scale",
    "effect", "ci_low", "ci_high", "p_random", "t_mean", "p_change", "p_link", "p", "q",
    "class_effect_min", "class_effect_max", "classes_agree", "selective",
)  # fmt: skip


def unit_concepts(
    changes: pd.DataFrame,
    nulls: pd.DataFrame,
    measures: Sequence[str],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    q: float = 0.05,
    min_effect: float = DEFAULT_MIN_EFFECT,
    ci: float = 0.95,
    column_p: pd.Series | None = None,
    natural_scale: pd.Series | None = None,
    workers: int = 1,
) -> pd.DataFrame:
    """One row per unit x measure with the columns of ``CONCEPT_COLUMNS`` (see the module docstring).

    ``natural_scale`` holds each measure's standard deviation over natural samples, by
    measure; ``natural_change`` is the trimmed change over it (NaN for measures it lacks).

    The per-class effects behind ``class_effect_min``, ``class_effect_max`` and
    ``classes_agree`` are :func:`class_effects`'s.

    ``column_p`` holds the link-column p-value of every unit, by unit id (the ``p`` of
    ``link/units.parquet``); without it ``p_link`` is NaN and ``p`` rests on the two nulls,
    which only tests of the statistics themselves should rely on.

    The bootstrap runs on ``workers`` threads; the numbers do not depend on how many.
    """
    measures = list(measures)
    _require_columns(changes, "changes", ["unit", "sample", "step", "w_distance", *measures])
    _require_columns(nulls, "nulls", ["control", "unit", "sample", "step", "w_distance", *measures])
    if not measures:
        raise ValueError("unit_concepts: no measures to test")
    if changes.empty:
        raise ValueError("changes: the table has no rows")

    unit_changes = measure_changes(changes, measures, by=_sample_keys(changes))
    null_changes = measure_changes(nulls, measures, by=("control", *_sample_keys(nulls)))
    directions = null_changes[null_changes["control"] == RANDOM_DIRECTION]
    rerender = null_changes[null_changes["control"] == RERENDER]

    units, values = _by_unit(unit_changes, measures)  # [U, M, n]
    distance = sweep_distances(changes).reindex(units).to_numpy()
    per_w = _per_w(values, distance)
    upper_only = upper_tailed(measures)
    as_is_null = direction_effects(directions, measures)
    w_distances = sweep_distances(nulls[nulls["control"] == RANDOM_DIRECTION])
    per_w_null = direction_effects(directions, measures, w_distances)
    as_is = _against_directions(values, _null_moments(*as_is_null), upper_only)
    by_w = _against_directions(per_w, _null_moments(*per_w_null), upper_only)
    # Bonferroni over the two comparisons: valid whichever way a unit is like a random direction.
    use_w = by_w.p < as_is.p
    p_random = np.minimum(2 * np.fmin(as_is.p, by_w.p), 1.0)
    compared = np.where(use_w, PER_W, AS_IS)
    effect = np.where(use_w, by_w.effect, as_is.effect)
    location = np.where(use_w, by_w.location, as_is.location)
    scale = np.where(use_w, by_w.scale, as_is.scale)
    count = np.sum(~np.isnan(values), axis=2)  # [U, M]
    mean_change = _nanmean(values, axis=2)
    trimmed_change = as_is.trimmed
    p_change = change_test(values, rerender[measures].to_numpy(dtype=np.float64).T, upper_only)
    p_link = _link_p(column_p, units, len(measures))
    # Whether the effect is real rests on the unit's own samples and its link column; how
    # large it is against random directions is the effect, a size, not a p-value (see the
    # module docstring: random directions cap the effect near sqrt(layer width)).
    p = np.where(np.isnan(p_change), np.nan, np.fmax(p_change, np.nan_to_num(p_link)))
    q_values = benjamini_hochberg(p.ravel()).reshape(p.shape)
    ci_low, ci_high = _bootstrap_effect_ci(
        (values, per_w), (as_is_null[0], per_w_null[0]), (as_is, by_w), n_boot, seed, ci, workers
    )
    per_class = class_effects(unit_changes, directions, measures, use_w, distance, w_distances)
    class_min = per_class.groupby(["unit", "measure"])["effect"].min()
    class_max = per_class.groupby(["unit", "measure"])["effect"].max()
    clear = per_class["effect"].abs() >= min_effect
    clear_up = (clear & (per_class["effect"] > 0)).groupby([per_class["unit"], per_class["measure"]]).any()
    clear_down = (clear & (per_class["effect"] < 0)).groupby([per_class["unit"], per_class["measure"]]).any()
    grid = pd.MultiIndex.from_product([units, measures], names=["unit", "measure"])

    frame = pd.DataFrame(
        {
            "unit": np.repeat(units, len(measures)),
            "measure": np.tile(measures, len(units)),
            "n": count.ravel(),
            "mean_change": mean_change.ravel(),
            "trimmed_change": trimmed_change.ravel(),
            "natural_change": (trimmed_change / _natural_scale(natural_scale, measures)).ravel(),
            "w_distance": np.repeat(distance, len(measures)),
            "effect_as_is": as_is.effect.ravel(),
            "effect_per_w": by_w.effect.ravel(),
            "compared": compared.ravel(),
            "null_mean": location.ravel(),
            "null_scale": scale.ravel(),
            "effect": effect.ravel(),
            "ci_low": ci_low.ravel(),
            "ci_high": ci_high.ravel(),
            "p_random": p_random.ravel(),
            "t_mean": mean_t(values).ravel(),
            "p_change": p_change.ravel(),
            "p_link": p_link.ravel(),
            "p": p.ravel(),
            "q": q_values.ravel(),
            "class_effect_min": class_min.reindex(grid).to_numpy(),
            "class_effect_max": class_max.reindex(grid).to_numpy(),
            "classes_agree": ~(clear_up & clear_down).reindex(grid, fill_value=False).to_numpy(),
        }
    )
    frame["selective"] = (frame["q"] <= q) & (frame["effect"].abs() >= min_effect) & frame["classes_agree"]
    return frame


def class_effects(
    unit_changes: pd.DataFrame,
    directions: pd.DataFrame,
    measures: list[str],
    use_w: np.ndarray,
    distance: np.ndarray,
    w_distances: pd.Series,
) -> pd.DataFrame:
    """Long table ``unit, measure, class, n, effect``: each unit's effect within each class.

    Per-sample changes ``unit_changes`` and ``directions`` (with a ``class`` column) are
    compared class by class, on the footing chosen for the pooled test (``use_w [U, M]``:
    per unit of w; ``distance [U]`` and ``w_distances`` the units' and directions' sweep
    distances), against the random directions' samples of the same class: a unit that
    raises a measure in one class and lowers it in another shows both, where the pooled
    effect would cancel.
    """
    units = np.unique(unit_changes["unit"].to_numpy())
    rows = []
    for class_id in np.unique(unit_changes["class"].to_numpy()):
        class_directions = directions[directions["class"] == class_id]
        if class_directions["unit"].nunique() < MIN_NULL_DIRECTIONS:
            continue
        class_units, values = _by_unit(unit_changes[unit_changes["class"] == class_id], measures)
        present = np.searchsorted(units, class_units)
        as_is = _null_moments(*direction_effects(class_directions, measures))
        per_w = _null_moments(*direction_effects(class_directions, measures, w_distances))
        trimmed_as_is = trimmed_mean(values)
        trimmed_per_w = trimmed_mean(_per_w(values, distance[present]))
        with np.errstate(invalid="ignore", divide="ignore"):
            effect_as_is = (trimmed_as_is - as_is[0]) / np.where(as_is[1] > 0, as_is[1], np.nan)
            effect_per_w = (trimmed_per_w - per_w[0]) / np.where(per_w[1] > 0, per_w[1], np.nan)
        effect = np.where(use_w[present], effect_per_w, effect_as_is)
        rows.append(
            pd.DataFrame(
                {
                    "unit": np.repeat(class_units, len(measures)),
                    "measure": np.tile(measures, len(class_units)),
                    "class": class_id,
                    "n": np.sum(~np.isnan(values), axis=2).ravel(),
                    "effect": effect.ravel(),
                }
            )
        )
    if not rows:
        return pd.DataFrame({"unit": [], "measure": [], "class": [], "n": [], "effect": []})
    return pd.concat(rows, ignore_index=True)


def _sample_keys(table: pd.DataFrame) -> tuple[str, ...]:
    """Keys of one sweep: unit and sample, with the sample's class where the table has it."""
    return ("unit", "class", "sample") if "class" in table.columns else ("unit", "sample")


@dataclass(frozen=True)
class _Comparison:
    """A unit x measure grid ``[U, M]`` compared with random directions."""

    trimmed: np.ndarray
    effect: np.ndarray
    p: np.ndarray
    location: np.ndarray
    scale: np.ndarray
    excess: np.ndarray


def _against_directions(
    values: np.ndarray, null: tuple[np.ndarray, np.ndarray, np.ndarray, int], upper_only: np.ndarray
) -> _Comparison:
    """Changes ``[U, M, n]`` against random directions' (:func:`direction_null`, same units)."""
    null_mean, null_sd, null_noise, n_directions = null
    trimmed = trimmed_mean(values)
    location = np.broadcast_to(null_mean, trimmed.shape)
    scale = np.broadcast_to(null_sd, trimmed.shape)
    # Under the null the unit is one more random direction, but its trimmed change may be
    # noisier than theirs (fewer or more variable samples): that excess noise widens the test.
    excess_noise = np.clip(trimmed_mean_variance(values)[0] - null_noise, 0.0, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        effect = np.where(scale > 0, (trimmed - location) / scale, np.nan)
        t = (trimmed - location) / np.sqrt(scale**2 * (1 + 1 / n_directions) + excess_noise)
    p = _t_p_value(t, n_directions - 1, upper_only)
    return _Comparison(trimmed, effect, p, location, scale, excess_noise)


LABELLED = "labelled"

NOT_CONTROLLABLE = "controllability"
# The gate of a unit whose only selective measures are parts that moved with the whole object.
WITH_WHOLE = "whole object"
# The gate of a unit whose sweep moved measures that its residual is not associated with.
NOT_IN_RESIDUAL = "residual"
RESIDUAL_COLUMNS = ("residual_association", "residual_q", "residual_beyond_object")


def unit_summary(
    concepts: pd.DataFrame,
    changes: pd.DataFrame,
    tuning: pd.DataFrame | None = None,
    redundancy: pd.Series | None = None,
    domain: pd.DataFrame | None = None,
    *,
    q: float = 0.05,
    min_effect: float = DEFAULT_MIN_EFFECT,
    min_control_slope: float = 0.0,
    min_association: float = 0.0,
) -> pd.DataFrame:
    """One row per unit: its two labels, its redundancy and the classifier-side measures.

    - The unique label (``unique_measure``, ``unique_sign``, ``unique_effect``, ``unique_q``,
      ``unique_residual_association``): what the unit adds beyond the rest of the layer. A
      candidate is a measure the sweep moves selectively that the unit's residual (what the
      rest of the layer does not predict of it) is associated with across natural samples, in
      the same direction (:func:`residual_confirmed`, columns of :func:`with_residual_tuning`);
      the label is the candidate with the largest |residual association|. Only a
      controllable unit gets one. Without the residual columns in ``concepts`` the label
      is the selective measure that the sweep moves both most reliably and furthest
      (:func:`label_strength`), motion only where nothing else is selective.
      Why both. A sweep moves the latent along the link's column, which carries whatever the
      latents co-vary with beyond the other units, not only what the unit reads: in a small
      layer whose colour units are the only ones that tell breeds apart, sweeping a coat
      luminance unit also lengthened the legs, as the breeds' legs differ too; and a sweep
      that leaves the generator's domain moves most, in natural spreads, the measures that
      vary least in nature (a coat's hue for a redness unit), or distorts parts. The residual
      says which of the changes the unit itself carries, and needs no generator.
    - The tuning label (``tuning_measure``, ``tuning_sign``, ``tuning_association``,
      ``tuning_q``): from ``tuning`` (:func:`unit_tuning`), what the unit responds to across
      natural samples; the selective measure with the largest |association|.
    - Both labels follow the hierarchy of the whole object and its parts
      (:func:`label_candidates`): a part measure is a candidate only where the part changed
      differently from the whole (column ``beyond_object`` of ``concepts`` and ``tuning``,
      from :func:`beyond_whole` and :func:`tuning_beyond_whole`); otherwise the whole's
      own measure competes for the label, not one of its parts.
    - ``unique_gate`` and ``tuning_gate``: ``labelled``, or what stopped the unit's strongest
      candidate (largest :func:`label_strength` or |association|): ``controllability``, ``link column``
      (its q failed because its link column is fitting noise), ``q``, ``effect`` (too small),
      ``classes`` (clear effects of opposite sign in two classes), ``association``,
      ``whole object`` (its only selective measures are parts that moved with the whole
      object, and the object's own measure is not selective), or ``residual`` (its sweep
      moves measures, but its residual is associated with none of them that way: in a
      layer that predicts the unit almost wholly, what a sweep of it shows is not its own).
    - ``n_selective``: how many measures are selective in the sweep, parts moving with the
      whole included.
    - ``redundancy_r2``: the held-out R² of the unit from the rest of the layer, its
      duplicates aside (:func:`unit_redundancy`); near 1 the unique label is poorly determined.
    - ``sweep_end_distance`` and ``sweep_in_domain``: from ``domain`` (one row per unit,
      :func:`pipeline.stages.perturb.sweep_domain`), how far the sweep's ends lie from the
      generator's training latents, in radii of their domain, and the share of sweeps that
      stay inside it. A sweep sets one unit over its whole range and holds the others, a
      combination that natural samples need not contain; where the rest of the layer nearly
      predicts the unit, the link gives it a long column and the renders leave the images the
      generator was trained to make. What then changes says little about what the unit reads.
    - ``controllability``: the fraction of samples whose re-encoded activation rises with
      the requested value (positive least-squares slope over the steps).
    - ``slope``: the pooled within-sample slope of achieved on requested (1: fully controlled);
      ``control_p``: the one-sided t-test that the per-sample slopes are above 0 (the sweep
      moves the unit's own re-encoded activation the requested way, beyond the scatter
      across samples); ``control_q``: its Benjamini-Hochberg q over the units;
      ``controllable``: ``control_q <= q`` and ``slope >= min_control_slope``. The test
      tells a unit the sweep moves from one it does not, whatever the layer; the floor only
      keeps units the sweep moves by a negligible share of the request. It must sit well
      below one: a sweep sets one unit and holds the rest, so of k copies of a function it
      passes on about 1/k of the request (three copies: slopes 0.14-0.37 where single
      copies reach 0.44-1.12).
    - ``specificity``: the mean |change| of the tuned unit over the mean absolute change of
      all other units, both at the last step.
    - ``prob_change``: the mean change of the original class's probability, last minus first
      step; ``class_kept``: the fraction of samples still predicted as their class at the
      last step.
    """
    _require_columns(concepts, "concepts", ["unit", "measure", "effect", "q", "selective"])
    _require_columns(
        changes, "changes",
        ["unit", "class", "sample", "step", "requested", "achieved", "achieved_change", "others_mean_abs_change",
         "pred", "target_prob"],
    )  # fmt: skip
    index = pd.Index(np.sort(concepts["unit"].unique()), name="unit")
    summary = pd.DataFrame(index=index)
    control = classifier_measures(changes).reindex(index)
    control.insert(control.columns.get_loc("control_p") + 1, "control_q", benjamini_hochberg(control["control_p"]))
    controllable = (control["control_q"] <= q) & (control["slope"] >= min_control_slope)
    n_selective = concepts.groupby("unit")["selective"].sum().reindex(index).astype(np.int64)
    concepts, held_by_whole = label_candidates(concepts, index)
    concepts = concepts.assign(label_strength=label_strength(concepts))
    confirmed = residual_confirmed(concepts, q, min_association)
    rank = concepts["residual_association"].abs() if "residual_association" in concepts else concepts["label_strength"]
    unique = _label(concepts.assign(selective=confirmed, rank=rank), "effect", index, rank_by="rank")
    gate = _sweep_gates(concepts, index, q, min_effect)
    gate = gate.where(unique["measure"].notna() | ~held_by_whole, WITH_WHOLE)
    moved = concepts["selective"].groupby(concepts["unit"]).any().reindex(index, fill_value=False)
    gate = gate.where(unique["measure"].notna() | ~moved, NOT_IN_RESIDUAL)
    gate = gate.where(controllable, NOT_CONTROLLABLE)
    unique = unique.where(controllable)
    summary["unique_measure"] = unique["measure"]
    summary["unique_sign"] = np.sign(unique["effect"])
    summary["unique_effect"] = unique["effect"]
    summary["unique_q"] = unique["q"]
    if "residual_association" in unique:
        summary["unique_residual_association"] = unique["residual_association"]
    summary["unique_gate"] = gate
    summary["n_selective"] = n_selective
    if tuning is not None:
        tuning, tuning_held = label_candidates(tuning, index)
        tuned = _label(tuning, "association", index)
        summary["tuning_measure"] = tuned["measure"]
        summary["tuning_sign"] = np.sign(tuned["association"])
        summary["tuning_association"] = tuned["association"]
        summary["tuning_q"] = tuned["q"]
        tuning_gate = _tuning_gates(tuning, index, q, min_association)
        summary["tuning_gate"] = tuning_gate.where(tuned["measure"].notna() | ~tuning_held, WITH_WHOLE)
    if redundancy is not None:
        summary["redundancy_r2"] = redundancy.reindex(index)
    if domain is not None:
        summary = summary.join(domain[["sweep_end_distance", "sweep_in_domain"]], how="left")
    summary = summary.join(control, how="left")
    summary["controllable"] = controllable
    return summary.reset_index()


def label_strength(concepts: pd.DataFrame) -> pd.Series:
    """What ranks a unit's selective measures for its unique label: ``|t_mean| x
    |natural_change|``, how reliably times how far the sweep moves the measure (``|t_mean|``
    alone where the measure has no natural scale, as motion has not).

    Either alone misleads. How reliably alone prefers a small side effect that every
    sample shows: holding a unit that mixes x with redness fixed, a sweep that raises
    redness lowers x as steadily. How far alone prefers a measure that hardly varies in
    nature: brightening a near-grey background tints it by many of its saturation's
    natural standard deviations, by more in some images than in others. The plain mean's
    t, not the trimmed one, so that a measure whose renders sometimes fail ranks lower.
    """
    return concepts["t_mean"].abs() * concepts["natural_change"].abs().fillna(1.0)


def _label(tests: pd.DataFrame, strength: str, index: pd.Index, rank_by: str | None = None) -> pd.DataFrame:
    """Per unit, the selective test with the largest |rank_by| (default: ``strength``), motion
    only where nothing else is; its measure, ``strength``, q and any ``RESIDUAL_COLUMNS``."""
    selective = tests[tests["selective"]].copy()
    selective["is_motion"] = selective["measure"].map(quantity_of).isin(RELATIVE_QUANTITIES)
    selective["magnitude"] = selective[rank_by or strength].abs()
    top = (
        selective.sort_values(["unit", "is_motion", "magnitude"], ascending=[True, True, False], kind="stable")
        .groupby("unit", sort=True)
        .head(1)
        .set_index("unit")
    )
    columns = ["measure", strength, "q", *[column for column in RESIDUAL_COLUMNS if column in top]]
    return top[columns].reindex(index)


def residual_confirmed(concepts: pd.DataFrame, q: float, min_association: float) -> pd.Series:
    """Which of the sweep's selective tests may carry the unique label: those whose measure the
    unit's residual is associated with across natural samples (``RESIDUAL_COLUMNS``, from
    :func:`with_residual_tuning`: q <= ``q``, |association| >= ``min_association``), in the
    direction the sweep moved it, and for a part's measure, beyond the whole object there
    too. Tests without those columns are kept as they are."""
    if "residual_association" not in concepts.columns:
        return concepts["selective"]
    association = concepts["residual_association"]
    return (
        concepts["selective"]
        & (concepts["residual_q"] <= q)
        & (association.abs() >= min_association)
        & (np.sign(association) == np.sign(concepts["effect"]))
        & concepts["residual_beyond_object"].astype("boolean").fillna(False).astype(bool)
    )


def with_residual_tuning(concepts: pd.DataFrame, residual_tuning: pd.DataFrame) -> pd.DataFrame:
    """``concepts`` with ``RESIDUAL_COLUMNS`` joined on unit and measure from ``residual_tuning``
    (:func:`unit_tuning` of the units' residuals, :func:`held_out_residuals`, with the
    hierarchy's columns of :func:`tuning_beyond_whole` on the same residuals joined by
    :func:`with_hierarchy`); NaN where the measure was not tested there (motion, which a
    single render lacks)."""
    residual = residual_tuning[["unit", "measure", "association", "q", "beyond_object"]].rename(
        columns={"association": "residual_association", "q": "residual_q", "beyond_object": "residual_beyond_object"}
    )
    return concepts.merge(residual, on=["unit", "measure"], how="left", validate="one_to_one")


def _strongest(tests: pd.DataFrame, strength: str) -> pd.DataFrame:
    """Per unit, its test with the largest |strength| (ties: the first), motion only where nothing else is."""
    ranked = tests.assign(
        is_motion=tests["measure"].map(quantity_of).isin(RELATIVE_QUANTITIES),
        magnitude=tests[strength].abs().fillna(-1.0),
    )
    order = ranked.sort_values(["unit", "is_motion", "magnitude"], ascending=[True, True, False], kind="stable")
    return order.groupby("unit").head(1)


def _sweep_gates(concepts: pd.DataFrame, index: pd.Index, q: float, min_effect: float) -> pd.Series:
    """Which test decided each unit's unique label (see :func:`unit_summary`)."""
    top = _strongest(concepts, "label_strength").set_index("unit").reindex(index)
    link_decides = top["p_link"] == top["p"] if "p_link" in top else pd.Series(False, index=index)
    agree = top["classes_agree"].astype(bool) if "classes_agree" in top else pd.Series(True, index=index)
    gate = np.select(
        [
            concepts.groupby("unit")["selective"].any().reindex(index, fill_value=False).to_numpy(),
            ~(top["q"] <= q) & link_decides,
            ~(top["q"] <= q),
            ~(top["effect"].abs() >= min_effect),
            ~agree,
        ],
        [LABELLED, "link column", "q", "effect", "classes"],
        default=LABELLED,
    )
    return pd.Series(gate, index=index)


def _tuning_gates(tuning: pd.DataFrame, index: pd.Index, q: float, min_association: float) -> pd.Series:
    """Which test decided each unit's tuning label (see :func:`unit_summary`)."""
    top = _strongest(tuning, "association").set_index("unit").reindex(index)
    gate = np.select(
        [
            tuning.groupby("unit")["selective"].any().reindex(index, fill_value=False).to_numpy(),
            ~(top["q"] <= q),
            ~(top["association"].abs() >= min_association),
        ],
        [LABELLED, "q", "association"],
        default=LABELLED,
    )
    return pd.Series(gate, index=index)


HIERARCHY_COLUMNS = ("unit", "measure", "relative_effect", "relative_q", "beyond_object")
TUNING_HIERARCHY_COLUMNS = (
    "unit",
    "measure",
    "relative_association",
    "relative_q",
    "whole_beyond_part",
    "beyond_object",
)


def beyond_whole(
    changes: pd.DataFrame,
    nulls: pd.DataFrame,
    measures: Sequence[str],
    *,
    seed: int = 0,
    q: float = 0.05,
    min_effect: float = DEFAULT_MIN_EFFECT,
    column_p: pd.Series | None = None,
) -> pd.DataFrame:
    """Whether each unit's sweep moved each part differently from the whole object: one row
    per unit x part measure that has a whole-object counterpart, with ``HIERARCHY_COLUMNS``.

    The part's relative measure (:func:`pipeline.measures.relative_measures`: its value
    minus the object's, circularly for hue and orientation, its share of the object's area
    for area) is tested exactly as any measure is (:func:`unit_concepts`, without the
    bootstrap): its change must pass q, be ``min_effect`` random directions' spreads of
    their own relative change, and agree across classes. ``relative_effect`` and
    ``relative_q`` are that test's ``effect`` and ``q`` (Benjamini-Hochberg over the
    relative tests), and ``beyond_object`` is its ``selective``. Random directions also
    move parts against the whole (a new breed has other proportions), so the test asks
    for a relative change a random move of the layer does not give.
    """
    relative_changes, names = relative_measures(changes, measures)
    if not names:
        return pd.DataFrame({column: [] for column in HIERARCHY_COLUMNS})
    relative_nulls, _ = relative_measures(nulls, measures)
    tests = unit_concepts(
        relative_changes,
        relative_nulls,
        list(names.values()),
        n_boot=0,
        seed=seed,
        q=q,
        min_effect=min_effect,
        column_p=column_p,
    )
    return _relative_tests(tests, names, "relative_effect", "effect")


def tuning_beyond_whole(
    r: np.ndarray,
    units: np.ndarray,
    classes: np.ndarray,
    observed: pd.DataFrame,
    measures: Sequence[str],
    *,
    permutations: int,
    seed: int,
    q: float,
    min_association: float,
) -> pd.DataFrame:
    """The tuning analogue of :func:`beyond_whole`: whether each unit reads each part rather
    than the whole object across natural samples, with ``TUNING_HIERARCHY_COLUMNS``.

    The part's relative measure is tested as any measure is (:func:`unit_tuning`, same
    arguments); ``relative_association`` and ``relative_q`` are that test's. A unit tuned to
    where the whole object is correlates with every part's position, but not with where a
    part sits within the object. ``whole_beyond_part`` asks the other way round what the
    whole adds once the part is known (:func:`whole_given_part`). ``beyond_object`` needs the
    relative test selective and ``whole_beyond_part < min_association``: the whole adds
    nothing material in the part's own direction. A unit that reads the part passes, and so
    does one that reads the part against the whole (the whole then enters the other way
    round). A unit that reads the whole and something besides (a mixture) does not: a part
    whose measure follows the something besides passes the relative test, but the whole,
    measured over more of the object, still adds to what the part carries, so the coarser
    label stands.
    """
    relative_observed, names = relative_measures(observed, measures)
    names = {part: relative for part, relative in names.items() if quantity_of(part) not in RELATIVE_QUANTITIES}
    if not names:
        return pd.DataFrame({column: [] for column in TUNING_HIERARCHY_COLUMNS})
    tests = unit_tuning(
        r,
        units,
        classes,
        relative_observed,
        list(names.values()),
        permutations=permutations,
        seed=seed,
        q=q,
        min_association=min_association,
    )
    hierarchy = _relative_tests(tests, names, "relative_association", "association")
    screened = whole_given_part(r, units, classes, observed, {part: whole_counterpart(part) for part in names})
    hierarchy = hierarchy.merge(screened, on=["unit", "measure"], how="left", validate="one_to_one")
    hierarchy["beyond_object"] = hierarchy["beyond_object"] & ~(hierarchy["whole_beyond_part"] >= min_association)
    return hierarchy[list(TUNING_HIERARCHY_COLUMNS)]


def whole_given_part(
    r: np.ndarray, units: np.ndarray, classes: np.ndarray, observed: pd.DataFrame, pairs: Mapping[str, str]
) -> pd.DataFrame:
    """``unit``, ``measure`` (a part measure of ``pairs``, part -> whole) and ``whole_beyond_part``:
    the partial correlation of each unit of ``r [N, U]`` (ids ``units``) with the whole's
    measure given the part's, over the within-class ranks that :func:`unit_tuning` correlates
    (so the association a class difference gives is left out here too), signed so that it
    is positive where the whole adds in the direction of the unit's association with the
    part. NaN where a measure is constant."""
    parts, classes = list(pairs), np.asarray(classes)
    unit_ranks = _within_class_ranks(np.asarray(r, dtype=np.float64), classes)
    part_ranks = _within_class_ranks(observed[parts].to_numpy(dtype=np.float64), classes)
    whole_ranks = _within_class_ranks(observed[list(pairs.values())].to_numpy(dtype=np.float64), classes)
    unit_part = _correlation(unit_ranks, part_ranks)  # [U, P]
    unit_whole = _correlation(unit_ranks, whole_ranks)  # [U, P]
    part_whole = np.diag(_correlation(part_ranks, whole_ranks))  # [P]: each part with its own whole
    with np.errstate(invalid="ignore", divide="ignore"):
        partial = (unit_whole - unit_part * part_whole) / np.sqrt((1 - unit_part**2) * (1 - part_whole**2))
    partial = partial * np.sign(unit_part)
    return pd.DataFrame(
        {
            "unit": np.repeat(np.asarray(units), len(parts)),
            "measure": np.tile(parts, len(units)),
            "whole_beyond_part": partial.ravel(),
        }
    )


def _relative_tests(tests: pd.DataFrame, names: Mapping[str, str], size_column: str, size: str) -> pd.DataFrame:
    """The tests of relative measures ``names`` (part measure -> relative measure), named by
    their part measure: the test's ``size`` as ``size_column``, its q and whether it was selective."""
    part_of = {relative: part for part, relative in names.items()}
    return pd.DataFrame(
        {
            "unit": tests["unit"].to_numpy(),
            "measure": tests["measure"].map(part_of).to_numpy(),
            size_column: tests[size].to_numpy(),
            "relative_q": tests["q"].to_numpy(),
            "beyond_object": tests["selective"].to_numpy(dtype=bool),
        }
    )


def with_hierarchy(tests: pd.DataFrame, hierarchy: pd.DataFrame) -> pd.DataFrame:
    """``tests`` (one row per unit x measure) with the columns of ``hierarchy``
    (:func:`beyond_whole` or :func:`tuning_beyond_whole`) joined on unit and measure;
    ``beyond_object`` is True for measures without a whole-object counterpart, which the
    hierarchy does not hold back."""
    joined = tests.merge(hierarchy, on=["unit", "measure"], how="left", validate="one_to_one")
    joined["beyond_object"] = joined["beyond_object"].astype("boolean").fillna(True).astype(bool)
    return joined


def label_candidates(tests: pd.DataFrame, index: pd.Index) -> tuple[pd.DataFrame, pd.Series]:
    """The tests that may carry a label, and per unit of ``index`` whether the whole held one back.

    A selective part measure is a candidate only where its part changed differently from
    the whole object (``beyond_object``); otherwise its ``selective`` is cleared here, so the
    label goes to the object's own measure if that is selective, or to another measure.
    Parsimony: when all parts move together, the whole is what the unit moves, and which
    part shows it most reliably is chance (the body, the largest part, usually does). The
    second value says, per unit, whether any selective test was held back this way. Tests
    without a ``beyond_object`` column are returned as they are.
    """
    if "beyond_object" not in tests.columns:
        return tests, pd.Series(False, index=index)
    held = tests["selective"] & ~tests["beyond_object"]
    held_by_unit = held.groupby(tests["unit"]).any().reindex(index, fill_value=False)
    return tests.assign(selective=tests["selective"] & tests["beyond_object"]), held_by_unit


def classifier_measures(changes: pd.DataFrame) -> pd.DataFrame:
    """Per unit: controllability, slope, specificity, prob_change, class_kept (see :func:`unit_summary`)."""
    frame = changes.sort_values(["unit", "sample", "step"], kind="stable")
    keys = [frame["unit"], frame["sample"]]
    requested = frame["requested"].to_numpy(dtype=np.float64)
    achieved = frame["achieved"].to_numpy(dtype=np.float64)
    centred_requested = requested - frame.groupby(["unit", "sample"])["requested"].transform("mean").to_numpy()
    centred_achieved = achieved - frame.groupby(["unit", "sample"])["achieved"].transform("mean").to_numpy()
    moments = (
        pd.DataFrame({"cross": centred_requested * centred_achieved, "spread": centred_requested**2})
        .groupby(keys)
        .sum()
    )
    sample_slope = moments["cross"] / moments["spread"].where(moments["spread"] > 0)
    per_unit = moments.groupby(level=0).sum()

    first = frame.groupby(keys).head(1).set_index(["unit", "sample"])
    last = frame.groupby(keys).tail(1).set_index(["unit", "sample"])
    tuned_change = last["achieved_change"].abs().groupby(level=0).mean()
    others_change = last["others_mean_abs_change"].groupby(level=0).mean()
    return pd.DataFrame(
        {
            "controllability": (sample_slope > 0).groupby(level=0).mean(),
            "slope": per_unit["cross"] / per_unit["spread"].where(per_unit["spread"] > 0),
            "control_p": sample_slope.groupby(level=0).agg(_rises_p),
            "specificity": tuned_change / others_change.where(others_change > 0),
            "prob_change": (last["target_prob"] - first["target_prob"]).groupby(level=0).mean(),
            "class_kept": (last["pred"] == last["class"]).groupby(level=0).mean(),
        }
    ).rename_axis("unit")


def _rises_p(slopes: pd.Series) -> float:
    """One-sided p of a one-sample t-test that the mean of ``slopes`` is above 0 (NaNs left out).

    Identical slopes decide exactly (0 where they are positive, 1 otherwise); fewer than
    two give NaN.
    """
    values = slopes.dropna().to_numpy(dtype=np.float64)
    if len(values) < 2:
        return float("nan")
    if np.ptp(values) == 0:
        return 0.0 if values[0] > 0 else 1.0
    return float(scipy_stats.ttest_1samp(values, 0.0, alternative="greater").pvalue)


def selective_counts(concepts: pd.DataFrame) -> pd.DataFrame:
    """Per measure: how many units were tested and how many are selective, for the report."""
    _require_columns(concepts, "concepts", ["unit", "measure", "selective", "effect"])
    grouped = concepts.groupby("measure", sort=False)
    counts = pd.DataFrame(
        {
            "units": grouped["unit"].nunique(),
            "selective": grouped["selective"].sum().astype(np.int64),
            "increase": grouped.apply(lambda g: int((g["selective"] & (g["effect"] > 0)).sum()), include_groups=False),
        }
    )
    counts["decrease"] = counts["selective"] - counts["increase"]
    counts["fraction"] = counts["selective"] / counts["units"]
    return counts.reset_index()


def upper_tailed(measures: Sequence[str]) -> np.ndarray:
    """Per measure, whether its tests are one-sided (upper tail): the magnitudes, such as motion."""
    return np.array([quantity_of(measure) in MAGNITUDE_QUANTITIES for measure in measures], dtype=bool)


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q, scipy's ``false_discovery_control``); NaN
    stays NaN and is not counted as a test."""
    p = np.asarray(p, dtype=np.float64)
    q = np.full_like(p, np.nan)
    valid = ~np.isnan(p)
    if valid.any():
        q[valid] = scipy_stats.false_discovery_control(p[valid], method="bh")
    return q


def _require_columns(frame: pd.DataFrame, name: str, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KeyError(f"{name}: column {missing[0]!r} missing")


def direction_null(
    directions: pd.DataFrame, measures: list[str], distances: pd.Series | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Over random directions (their per-sample changes): the mean and standard deviation of
    their trimmed change, and the mean squared standard error of one direction's, each
    ``[M]``, and their count. With ``distances`` (each direction's ``w_distance``, by unit id)
    the changes count per unit of w."""
    return _null_moments(*direction_effects(directions, measures, distances))


def direction_effects(
    directions: pd.DataFrame, measures: list[str], distances: pd.Series | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Each random direction's trimmed change ``[J, M]`` and its squared standard error
    ``[J, M]``; per unit of w with ``distances`` (see :func:`direction_null`)."""
    n_directions = directions["unit"].nunique()
    if n_directions < MIN_NULL_DIRECTIONS:
        raise ValueError(
            f"nulls: need at least {MIN_NULL_DIRECTIONS} '{RANDOM_DIRECTION}' controls, got {n_directions}"
        )
    ids, per_direction = _by_unit(directions, measures)
    if distances is not None:
        per_direction = _per_w(per_direction, distances.reindex(ids).to_numpy())
    return trimmed_mean(per_direction), trimmed_mean_variance(per_direction)[0]


def _null_moments(effects: np.ndarray, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """:func:`direction_null`'s summary of :func:`direction_effects`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(effects, axis=0), np.nanstd(effects, axis=0, ddof=1), np.nanmean(noise, axis=0), len(effects)


def sweep_distances(table: pd.DataFrame) -> pd.Series:
    """Per unit id of a long table: the median over its samples of its last step's ``w_distance``."""
    ordered = table.sort_values(["unit", "sample", "step"], kind="stable")
    last = ordered.groupby(["unit", "sample"], sort=True)["w_distance"].last()
    return last.groupby(level="unit").median().astype(np.float64)


def _per_w(values: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """Changes ``[U, M, n]`` over each unit's ``distance [U]`` in w; NaN where a sweep did not move w."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(distance[:, None, None] > 0, values / distance[:, None, None], np.nan)


def _natural_scale(natural_scale: pd.Series | None, measures: list[str]) -> np.ndarray:
    """``[M]``: each measure's natural standard deviation, NaN where unknown or not positive."""
    if natural_scale is None:
        return np.full(len(measures), np.nan)
    scale = natural_scale.reindex(measures).to_numpy(np.float64)
    return np.where(scale > 0, scale, np.nan)


def _link_p(column_p: pd.Series | None, units: np.ndarray, n_measures: int) -> np.ndarray:
    """``[U, M]``: each unit's link-column p-value, or NaN for all without ``column_p``."""
    if column_p is None:
        return np.full((len(units), n_measures), np.nan)
    missing = np.setdiff1d(units, column_p.index.to_numpy())
    if missing.size:
        raise KeyError(f"link units: no column test for unit {missing[0]}")
    return np.repeat(column_p.reindex(units).to_numpy(np.float64)[:, None], n_measures, axis=1)


def _nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    """``np.nanmean`` that gives NaN for an all-NaN slice without a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def _by_unit(unit_changes: pd.DataFrame, measures: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Unit ids and their changes as ``[U, M, n_max]``, NaN-padded where a unit has fewer samples."""
    frame = unit_changes.sort_values(["unit", "sample"], kind="stable")
    units, starts, counts = np.unique(frame["unit"].to_numpy(), return_index=True, return_counts=True)
    position = np.arange(len(frame)) - np.repeat(starts, counts)
    row = np.repeat(np.arange(len(units)), counts)
    n_max = int(counts.max()) if len(counts) else 0
    values = np.full((len(units), n_max, len(measures)), np.nan)
    values[row, position] = frame[measures].to_numpy(dtype=np.float64)
    return units, values.transpose(0, 2, 1).copy()


def trimmed_mean(values: np.ndarray, proportion: float = TRIM) -> np.ndarray:
    """Mean of each row along the last axis after dropping ``floor(proportion * n)`` values at each end.

    NaNs are ignored (``n`` counts the others); rows with too few values give NaN.
    """
    ordered, count, cut = _sorted_with_cut(values, proportion)
    sums = np.concatenate([np.zeros((*ordered.shape[:-1], 1)), np.cumsum(np.nan_to_num(ordered), axis=-1)], axis=-1)
    kept = count - 2 * cut
    upper = np.take_along_axis(sums, (count - cut)[..., None], axis=-1)[..., 0]
    lower = np.take_along_axis(sums, cut[..., None], axis=-1)[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(kept > 0, (upper - lower) / kept, np.nan)


def _sorted_with_cut(values: np.ndarray, proportion: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ordered = np.sort(values, axis=-1)  # NaNs last
    count = np.sum(~np.isnan(values), axis=-1)
    return ordered, count, np.floor(proportion * count).astype(np.int64)


def _winsorised_variance(values: np.ndarray, proportion: float = TRIM) -> np.ndarray:
    """Sample variance along the last axis after pulling the trimmed values in to the nearest kept one."""
    ordered, count, cut = _sorted_with_cut(values, proportion)
    last = np.maximum(count - cut - 1, 0)
    low = np.take_along_axis(ordered, cut[..., None], axis=-1)
    high = np.take_along_axis(ordered, last[..., None], axis=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanvar(np.clip(values, low, high), axis=-1, ddof=1)


def trimmed_mean_variance(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Squared standard error of the trimmed mean along the last axis (Yuen), and the kept count."""
    count = np.sum(~np.isnan(values), axis=-1)
    kept = count - 2 * np.floor(TRIM * count)
    with np.errstate(invalid="ignore", divide="ignore"):
        variance = (count - 1) * _winsorised_variance(values) / (kept * (kept - 1))
    return np.where(kept > 1, variance, np.nan), kept


def _t_p_value(t: np.ndarray, df: np.ndarray | int, upper_only: np.ndarray) -> np.ndarray:
    """p of t statistics ``[..., M]``: two-sided, or upper-tailed for the measures marked ``upper_only``."""
    with np.errstate(invalid="ignore"):
        return np.where(upper_only, scipy_stats.t.sf(t, df=df), 2 * scipy_stats.t.sf(np.abs(t), df=df))


def yuen_test(values: np.ndarray, noise: np.ndarray, upper_only: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Yuen's statistic and p-value ``[U, M]`` of each unit's changes ``[U, M, n]`` against the
    noise changes ``[M, k]``.

    The p-value is two-sided, or upper-tailed (the unit's changes larger) where
    ``upper_only`` ``[M]`` is set. With no noise rows this is the one-sample trimmed t-test
    against zero change. Without any spread the statistic is infinite (signed) for a
    change and 0 for none.
    """

    def moments(data: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        spread, kept = trimmed_mean_variance(data)
        return trimmed_mean(data), spread, kept

    mean, spread, kept = moments(values)
    if noise.shape[-1]:
        noise_mean, noise_spread, noise_kept = moments(noise)
        noise_spread = np.nan_to_num(noise_spread)
    else:
        noise_mean, noise_spread, noise_kept = np.zeros(values.shape[1]), np.zeros(values.shape[1]), np.zeros(1)
    total = spread + noise_spread
    difference = mean - noise_mean
    with np.errstate(invalid="ignore", divide="ignore"):
        noise_term = np.where(noise_kept > 1, noise_spread**2 / (noise_kept - 1), 0.0)
        df = total**2 / (spread**2 / (kept - 1) + noise_term)
        t = difference / np.sqrt(total)
        p = _t_p_value(t, df, upper_only)
    # Without any spread the data decide exactly: a change is certain, no change is none.
    decided = np.where(upper_only, difference > 0, difference != 0)
    p = np.where(total == 0, np.where(decided, 0.0, 1.0), p)
    t = np.where(total == 0, np.sign(difference) * np.where(difference != 0, np.inf, 0.0), t)
    return np.where(kept > 1, t, np.nan), np.where(kept > 1, p, np.nan)


def change_test(values: np.ndarray, chain: np.ndarray, upper_only: np.ndarray) -> np.ndarray:
    """Whether each unit's sweep changes each measure: Yuen's p ``[U, M]`` of its per-sample
    changes ``[U, M, n]``.

    A signed measure is tested against no change (the one-sample trimmed t-test): a sweep
    that leaves w where it was renders the same image, so zero is the exact null, and each
    unit's test rests on its own samples alone. Against the re-render chain's changes
    instead, every unit would share one noisy reference whose chance excursions move all
    units' p-values together, and the chain drifts where sweeps do not (each of its cycles
    re-encodes the image; in the development runs its mean change of object area was 13
    standard errors from zero). A magnitude (``upper_only`` ``[M]``, motion) is never below
    zero, so it is tested one-sided against the chain's changes ``[M, k]``: any render
    moves the image a little. Trimmed, like the effect, so that one failed render cannot
    hide a change. Yuen's far tail is somewhat liberal (from 20 normal samples, p <= 2.5e-4
    came 1.6 times as often as it should).
    """
    p = yuen_test(values, np.empty((values.shape[1], 0)), upper_only)[1]
    if upper_only.any():
        p = np.where(upper_only, yuen_test(values, chain, upper_only)[1], p)
    return p


def mean_t(values: np.ndarray) -> np.ndarray:
    """Student's one-sample t ``[U, M]`` of the mean of each unit's changes ``[U, M, n]`` (NaNs
    left out); NaN with fewer than two values or no spread."""
    count = np.sum(~np.isnan(values), axis=-1)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        error = np.nanstd(values, axis=-1, ddof=1) / np.sqrt(count)
        return np.where((count > 1) & (error > 0), _nanmean(values, axis=-1) / error, np.nan)


def _bootstrap_effect_ci(
    footings: tuple[np.ndarray, np.ndarray],
    null_effects: tuple[np.ndarray, np.ndarray],
    comparisons: tuple[_Comparison, _Comparison],
    n_boot: int,
    seed: int,
    ci: float,
    workers: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap of the reported effect, ``[U, M]`` each.

    Each replicate resamples the unit's samples and, independently, the random directions
    (so the null's mean and spread vary as much as 24 or so directions leave them
    uncertain), computes the effect on both footings, and keeps the one whose test is the
    stronger in that replicate: the choice of footing is part of what is resampled, not
    fixed after seeing the data. ``footings``: the changes as is and per w ``[U, M, n]``;
    ``null_effects``: the directions' trimmed changes ``[J, M]`` on each footing;
    ``comparisons``: the point comparisons, whose excess noise the replicates' tests reuse.
    Units with the same number of samples share their resampling indices, so their
    replicates' trimmed means come from one table of draw counts
    (:func:`resampled_trimmed_means`); blocks of units run on ``workers`` threads.
    """
    units, n_measures, n_max = footings[0].shape
    low = np.full((units, n_measures), np.nan)
    high = np.full((units, n_measures), np.nan)
    if n_boot < 1 or n_max == 0:
        return low, high
    rng = np.random.default_rng(seed)
    n_directions = len(null_effects[0])
    direction_picks = rng.integers(0, n_directions, size=(n_boot, n_directions))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        null_location = [np.nanmean(effects[direction_picks], axis=1) for effects in null_effects]  # [B, M]
        null_scale = [np.nanstd(effects[direction_picks], axis=1, ddof=1) for effects in null_effects]
    samples_per_unit = (~np.isnan(footings[0])).any(axis=1).sum(axis=1)
    tails = (100 * (1 - ci) / 2, 100 * (1 + ci) / 2)

    def interval(block: np.ndarray, n: int, draws: np.ndarray) -> None:
        # Each unit's samples are packed first, so positions 0..n-1 are its samples.
        trimmed = resampled_trimmed_means(draws, [values[block, :, :n].reshape(-1, n) for values in footings])
        effects, strengths = [], []
        for means, location, scale, comparison in zip(trimmed, null_location, null_scale, comparisons, strict=True):
            difference = means.reshape(len(block), n_measures, n_boot) - location.T[None]
            with np.errstate(invalid="ignore", divide="ignore"):
                effects.append(difference / np.where(scale > 0, scale, np.nan).T[None])
                spread = scale.T[None] ** 2 * (1 + 1 / n_directions) + comparison.excess[block][..., None]
                strengths.append(np.nan_to_num(np.abs(difference) / np.sqrt(spread), nan=-1.0))
        chosen = np.where(strengths[1] > strengths[0], effects[1], effects[0])
        low[block], high[block] = _percentiles(chosen, tails)

    jobs = []
    for n in np.unique(samples_per_unit):
        if n < 2:
            continue
        draws = draw_counts(rng.integers(0, n, size=(n_boot, n)), n)
        members = np.flatnonzero(samples_per_unit == n)
        starts = range(0, len(members), BOOT_UNIT_BLOCK)
        jobs += [(members[start : start + BOOT_UNIT_BLOCK], n, draws) for start in starts]
    if workers > 1 and len(jobs) > 1:
        # NumPy releases the GIL in its loops; blocks write disjoint rows of low and high.
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(lambda job: interval(*job), jobs))
    else:
        for job in jobs:
            interval(*job)
    return low, high


def draw_counts(picks: np.ndarray, n: int) -> np.ndarray:
    """``[n, B]``: how often each of ``n`` samples is drawn in each of the B resamples ``picks [B, k]``."""
    counts = np.zeros((n, len(picks)))
    np.add.at(counts, (picks, np.arange(len(picks))[:, None]), 1.0)
    return counts


def resampled_trimmed_means(draws: np.ndarray, footings: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The :func:`trimmed_mean` of every bootstrap resample, without building the resamples.

    ``draws [n, B]`` counts how often each of n samples is drawn in each of B resamples
    (:func:`draw_counts`); each footing ``[K, n]`` holds K rows of n samples (NaN: missing,
    left out as :func:`trimmed_mean` leaves it out). Returns one ``[K, B]`` array per footing.

    With a row's valid values sorted, ``S_0 <= ... <= S_{c-1}``, and ``N_j`` the draws of
    the first j + 1 of them, the sum that the trimmed mean keeps (after ``g`` draws cut at
    each end of ``N = N_{c-1}``) is ``sum_j S_j (clip(N_j) - clip(N_{j-1}))`` with
    ``clip`` to ``[g, N - g]``; summed by parts it is ``sum_j clip(N_j) (S_j - S_{j+1}) - g S_0``
    with ``S_c = 0``, one matrix product per row over the clipped running counts. The work
    is linear in n where sorting each resample is not, and nothing of size K x B x n is
    sorted. Footings whose rows sort alike (the same changes on a positive scale per row,
    as per w is to as is) share the running counts.
    """
    draws = np.asarray(draws, dtype=np.float64)
    footings = [np.asarray(values, dtype=np.float64) for values in footings]
    results = [np.empty((len(values), draws.shape[1])) for values in footings]
    # Rows go in chunks whose running counts (rows x n x B doubles) stay in the cache.
    rows_per_chunk = max(1, RUNNING_CHUNK_BYTES // (8 * draws.size))
    for start in range(0, len(footings[0]), rows_per_chunk):
        chunk = slice(start, start + rows_per_chunk)
        for result, means in zip(results, _resampled_trimmed_chunk(draws, [v[chunk] for v in footings]), strict=True):
            result[chunk] = means
    return results


def _resampled_trimmed_chunk(draws: np.ndarray, footings: list[np.ndarray]) -> list[np.ndarray]:
    """:func:`resampled_trimmed_means` of a few rows."""
    n = draws.shape[0]
    rows = len(footings[0])
    results: list[np.ndarray] = []
    order = counts = None
    for values in footings:
        if order is None or not _sorts_by(values, order, counts):
            order = np.argsort(values, axis=1, kind="stable")  # NaNs last
            counts = np.sum(~np.isnan(values), axis=1)
            running, drawn, cut = _clipped_running_draws(draws, order, counts)
        ordered = np.take_along_axis(values, order, axis=1)
        following = np.concatenate([ordered[:, 1:], np.zeros((rows, 1))], axis=1)
        steps = np.where(np.arange(n)[None, :] < (counts - 1)[:, None], ordered - following, 0.0)
        present = np.flatnonzero(counts > 0)
        steps[present, counts[present] - 1] = ordered[present, counts[present] - 1]
        kept_sum = np.matmul(steps[:, None, :], running.transpose(1, 0, 2))[:, 0, :] - cut * ordered[:, :1]
        kept = drawn - 2 * cut
        with np.errstate(invalid="ignore", divide="ignore"):
            results.append(np.where(kept > 0, kept_sum / kept, np.nan))
    return results


def _sorts_by(values: np.ndarray, order: np.ndarray, counts: np.ndarray) -> bool:
    """Whether ``order`` sorts each row of ``values`` with their ``counts`` valid values first."""
    if not np.array_equal(np.sum(~np.isnan(values), axis=1), counts):
        return False
    ordered = np.take_along_axis(values, order, axis=1)
    valid = np.arange(values.shape[1])[None, :] < counts[:, None]
    if np.isnan(ordered[valid]).any():
        return False
    rising = np.diff(ordered, axis=1) >= 0
    return bool(np.all(rising | ~valid[:, 1:]))


def _clipped_running_draws(
    draws: np.ndarray, order: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For :func:`resampled_trimmed_means`: the running draw counts in each row's sorted order,
    clipped to the kept range, ``[n, K, B]``, with the valid draws ``N`` and the cut ``g`` ``[K, B]``."""
    rows, n = order.shape
    running = draws[order.T]  # [n, K, B]
    for position in range(1, n):
        running[position] += running[position - 1]
    last = np.maximum(counts - 1, 0)
    drawn = np.where((counts > 0)[:, None], running[last, np.arange(rows)], 0.0)
    cut = np.floor(TRIM * drawn)
    if drawn.size and np.ptp(drawn) == 0:  # no NaN: the same bounds everywhere, and a faster clip
        np.clip(running, cut.flat[0], drawn.flat[0] - cut.flat[0], out=running)
    else:
        np.minimum(running, drawn - cut, out=running)
        np.maximum(running, cut, out=running)
    return running, drawn, cut


def _percentiles(values: np.ndarray, tails: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """``np.nanpercentile`` of ``values [..., B]`` along the last axis at ``tails``: the rows
    without NaN by the faster ``np.percentile`` (the same numbers), NaN for rows of NaN only.
    No warnings filter: it is process-wide, and the bootstrap calls this from threads."""
    flat = values.reshape(-1, values.shape[-1])
    result = np.full((2, len(flat)), np.nan)
    missing = np.isnan(flat)
    complete = ~missing.any(axis=1)
    partial = ~complete & ~missing.all(axis=1)
    if complete.any():
        result[:, complete] = np.percentile(flat[complete], tails, axis=1)
    if partial.any():
        result[:, partial] = np.nanpercentile(flat[partial], tails, axis=1)
    return result[0].reshape(values.shape[:-1]), result[1].reshape(values.shape[:-1])


TUNING_COLUMNS = ("unit", "measure", "n", "association", "p", "q", "selective")
# Columns of shuffled measures per matrix product in unit_tuning.
TUNING_BATCH_COLUMNS = 2048


def unit_tuning(
    r: np.ndarray,
    units: np.ndarray,
    classes: np.ndarray,
    observed: pd.DataFrame,
    measures: Sequence[str],
    *,
    permutations: int,
    seed: int,
    q: float,
    min_association: float,
) -> pd.DataFrame:
    """Each unit's tuning: one row per unit x measure with the columns of ``TUNING_COLUMNS``.

    ``r [N, U]`` holds the activations of units ``units [U]`` on N natural samples of classes
    ``classes [N]``, and ``observed`` those samples' image measures (rows in the same order).
    ``association`` is the pooled within-class rank correlation of the unit with the
    measure: both are ranked within each class and centred there, so a measure that only
    differs between classes, as the unit does, is no tuning. ``p`` tests it against a
    permutation null that shuffles the measures within each class (``permutations``
    shuffles): the correlation over the permutations' spread, read from the normal tail,
    so that p-values far below ``1 / permutations`` are still resolved, as Benjamini-
    Hochberg over thousands of tests needs. ``q`` is Benjamini-Hochberg over units x
    measures, and ``selective`` is ``q <= q`` and ``|association| >= min_association``.
    Motion measures are left out: a single render does not move.
    """
    measures = [m for m in measures if quantity_of(m) not in RELATIVE_QUANTITIES]
    _require_columns(observed, "sample measures", measures)
    r = np.asarray(r, dtype=np.float64)
    classes = np.asarray(classes)
    if len(r) != len(observed) or len(r) != len(classes):
        raise ValueError(f"unit_tuning: {len(r)} activation rows, {len(observed)} measured, {len(classes)} classes")
    unit_ranks = _within_class_ranks(r, classes)
    measure_ranks = _within_class_ranks(observed[measures].to_numpy(dtype=np.float64), classes)
    association = _correlation(unit_ranks, measure_ranks)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(classes == c) for c in np.unique(classes)]
    target = np.concatenate(groups)
    shuffled_sq = np.zeros_like(association)
    n_measures = measure_ranks.shape[1]
    # Shuffles go to the matrix product a batch at a time: one product per shuffle spent its
    # time starting the BLAS threads. Each shuffle's correlations are summed in turn as before.
    batch = max(1, TUNING_BATCH_COLUMNS // max(n_measures, 1))
    for start in range(0, permutations, batch):
        shuffles = min(batch, permutations - start)
        permuted = np.empty((len(measure_ranks), shuffles, n_measures))
        for shuffle in range(shuffles):
            order = np.concatenate([rng.permutation(group) for group in groups])
            permuted[target, shuffle] = measure_ranks[order]
        correlations = _correlation(unit_ranks, permuted.reshape(len(measure_ranks), -1))
        for shuffle in range(shuffles):
            shuffled_sq += correlations[:, shuffle * n_measures : (shuffle + 1) * n_measures] ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        null_sd = np.sqrt(shuffled_sq / max(permutations, 1))
        p = 2 * scipy_stats.norm.sf(np.abs(association) / null_sd)
    p = np.where(np.isfinite(p), p, np.nan)
    q_values = benjamini_hochberg(p.ravel()).reshape(p.shape)
    frame = pd.DataFrame(
        {
            "unit": np.repeat(np.asarray(units, dtype=np.int64), len(measures)),
            "measure": np.tile(measures, len(units)),
            "n": len(r),
            "association": association.ravel(),
            "p": p.ravel(),
            "q": q_values.ravel(),
        }
    )
    frame["selective"] = (frame["q"] <= q) & (frame["association"].abs() >= min_association)
    return frame


def within_class_association(a: np.ndarray, b: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """``[A, B]`` pooled within-class rank correlations of the columns of ``a [N, A]`` and
    ``b [N, B]`` over samples of ``classes [N]``: the association of :func:`unit_tuning`."""
    classes = np.asarray(classes)
    ranks_a = _within_class_ranks(np.asarray(a, dtype=np.float64), classes)
    return _correlation(ranks_a, _within_class_ranks(np.asarray(b, dtype=np.float64), classes))


def _within_class_ranks(values: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """``values [N, K]`` ranked within each class (ties averaged) and centred there; NaN counts as the median."""
    ranks = np.zeros_like(values, dtype=np.float64)
    for c in np.unique(classes):
        rows = classes == c
        ranked = scipy_stats.rankdata(values[rows], axis=0, nan_policy="omit")
        ranked = ranked - np.nanmean(ranked, axis=0)
        ranks[rows] = np.nan_to_num(ranked)
    return ranks


def _correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[A, B]`` correlations of centred columns ``a [N, A]`` and ``b [N, B]``; NaN for a constant column."""
    with np.errstate(invalid="ignore", divide="ignore"):
        norms = np.sqrt(np.sum(a**2, axis=0))[:, None] * np.sqrt(np.sum(b**2, axis=0))[None, :]
        return np.where(norms > 0, (a.T @ b) / norms, np.nan)


# Ridge strengths (per training sample) of the residuals; held_out_residuals picks one per unit.
RESIDUAL_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
# Units whose activations are exact affine functions of one another (|correlation| above
# this) are one unit for the residuals: the link shares their column among them.
DUPLICATE_CORRELATION = 1.0 - 1e-6


def duplicate_representatives(r: np.ndarray) -> np.ndarray:
    """Per unit of ``r [N, U]``, the first unit it duplicates (itself where none does): units
    whose activations are exact affine functions of one another, such as a function's copies."""
    r = np.asarray(r, dtype=np.float64)
    centred = r - r.mean(axis=0)
    norms = np.linalg.norm(centred, axis=0)
    live = norms > 0
    unit_vectors = centred[:, live] / norms[live]
    duplicated = np.abs(unit_vectors.T @ unit_vectors) >= DUPLICATE_CORRELATION
    representative = np.arange(r.shape[1])
    representative[np.flatnonzero(live)] = np.flatnonzero(live)[duplicated.argmax(axis=1)]
    return representative


def held_out_residuals(
    r: np.ndarray, *, folds: int, seed: int, alphas: Sequence[float] = RESIDUAL_ALPHAS
) -> tuple[np.ndarray, np.ndarray]:
    """What the rest of the layer does not predict of each unit: held-out residuals ``[N, U]``
    of ``r [N, U]`` by ridge regression in k folds, in the units' own units, and each unit's
    held-out R² ``[U]`` (NaN for a constant unit, whose residual is 0).

    "The rest" leaves out a unit's duplicates (:func:`duplicate_representatives`): they are
    the same unit, and a sweep of one still moves what they share, because the link shares
    their column. A unit's residual is its representative's times the exact factor between them.
    Every representative's ridge on the others comes from one inverse per fold: with ``P``
    the inverse of the standardised Gram matrix plus ``alpha`` I, unit i's coefficients on
    the others are ``-P[:, i] / P[i, i]``. Each unit takes the ``alpha`` (times the training
    rows) of ``alphas`` with its least held-out error: one strength for all would suit the
    many units the layer barely predicts and shrink away those it predicts almost exactly.
    """
    r = np.asarray(r, dtype=np.float64)
    n, width = r.shape
    if folds < 2 or n < 2 * folds:
        raise ValueError(f"held_out_residuals: need at least 2 folds of 2 samples, got {folds} folds of {n} samples")
    representative = duplicate_representatives(r)
    kept = np.unique(representative)
    fold_of = np.random.default_rng(seed).permutation(n) % folds

    def fold_residuals(fold: int, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        train, test = r[fold_of != fold][:, kept], r[fold_of == fold][:, kept]
        mean, std = train.mean(axis=0), train.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        x_train, x_test = (train - mean) / std, (test - mean) / std
        precision = np.linalg.inv(x_train.T @ x_train + alpha * len(train) * np.eye(len(kept)))
        coefficients = -precision / np.diag(precision)[None, :]
        np.fill_diagonal(coefficients, 0.0)
        return x_test - x_test @ coefficients, x_test, std

    errors = np.zeros((len(alphas), len(kept)))
    totals = np.zeros(len(kept))
    for fold in range(folds):
        for k, alpha in enumerate(alphas):
            standardised, x_test, _ = fold_residuals(fold, alpha)
            errors[k] += np.sum(standardised**2, axis=0)
        totals += np.sum(x_test**2, axis=0)
    best = errors.argmin(axis=0)
    # A second pass rebuilds each fold's fit for the chosen strengths only: keeping every
    # strength's residuals until the choice would hold len(alphas) copies of [N, U].
    residuals = np.zeros((n, len(kept)))
    for fold in range(folds):
        rows = fold_of == fold
        for k in np.unique(best):
            standardised, _, std = fold_residuals(fold, alphas[k])
            chosen = best == k
            residuals[np.ix_(rows, chosen)] = standardised[:, chosen] * std[chosen]
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = np.where(totals > 0, 1 - errors[best, np.arange(len(kept))] / totals, np.nan)
    column = np.searchsorted(kept, representative)
    centred = r - r.mean(axis=0)
    source = centred[:, representative]
    with np.errstate(invalid="ignore", divide="ignore"):
        factor = np.where((source**2).sum(axis=0) > 0, (centred * source).sum(axis=0) / (source**2).sum(axis=0), 0.0)
    return residuals[:, column] * factor, r2[column]


def unit_redundancy(r2: np.ndarray, units: np.ndarray) -> pd.Series:
    """Per unit of ``units``: its held-out R² from the rest of the layer (``r2 [U]`` of
    :func:`held_out_residuals`), as the summary's ``redundancy_r2``. A value near 1 says the
    rest of the layer carries the unit, so what a sweep of it alone shows, its unique
    contribution, is small and poorly determined."""
    units = np.asarray(units, dtype=np.int64)
    return pd.Series(np.asarray(r2)[units], index=pd.Index(units, name="unit"), name="redundancy_r2")


def bootstrap_mean_ci(
    values: np.ndarray, *, n_boot: int, seed: int, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap CI of the column means of ``values [N, M]`` over rows, NaNs ignored."""
    n, m = values.shape
    if n < 2:
        return np.full(m, np.nan), np.full(m, np.nan)
    resamples = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(values[resamples], axis=1)  # [n_boot, M]
        low, high = np.nanquantile(means, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return low, high
