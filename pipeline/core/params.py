"""The typed schema of params.yaml: one frozen pydantic model per group, validated once at stage start.

Defaults are the paper's values (docs/method.md "Choices the paper leaves open" for the rest), so library code
and tests can build a group with ``NCutParams()``; a params file must still spell out every key
(:func:`load_params` reports a missing one), so every number a run uses is in the file DVC tracks.
Fields marked :data:`RUNTIME` (workers, batch sizes, devices, chunk sizes) change how fast a stage
runs, never what it writes: stages may read them without declaring them, and they are not DVC params.
"""
from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.core.errors import PipelineError
from pipeline.core.presets import COD_PRESETS, PRESETS

RUNTIME = {"runtime": True}
METHODS = ("cls", "kmeans", "ncut", "ncut_ipo")  # bipartitions of paper Tables 3-4
MAP_METHODS = (*METHODS, "head")                 # every method predict writes maps of
RELEASE = "release"                              # the authors' released head, when predict.release_head names it


def map_methods(release_head: str) -> tuple[str, ...]:
    """Every method with maps: the bipartitions, the head, and the released head when ``predict.release_head``
    names one."""
    return (*MAP_METHODS, *([RELEASE] if release_head else []))
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:\d+)?)$"
PATTERN_HELP = {NAME_PATTERN: "must be letters, digits, '.', '_' or '-' (it names a folder and a DVC stage)",
                DEVICE_PATTERN: "must be auto, cpu, mps, cuda or cuda:N"}
Name = Annotated[str, Field(pattern=NAME_PATTERN)]


class ParamsError(PipelineError):
    """A params file that does not match the schema (one line: file, key path, value, what is allowed)."""


class Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _runtime(default, **kw):
    return Field(default, json_schema_extra=RUNTIME, **kw)


class DemoParams(Group):
    write: list[Name] = ["demo"]   # demo sets data/<name> to generate (one demo_data stage each)
    n_images: int = Field(24, ge=1)
    seed: int = Field(0, ge=0)


class DatasetSpec(Group):
    """``{root, preset}`` for a known layout, or ``{root, images, masks}`` (masks optional)."""

    root: str
    preset: Literal[tuple(PRESETS)] | None = None  # type: ignore[valid-type]
    images: str | None = None
    masks: str | None = None

    @model_validator(mode="after")
    def _one_layout(self):
        if (self.preset is None) == (self.images is None):
            raise ValueError("needs either 'preset' or 'images' (and optionally 'masks'), not both")
        if self.preset is not None and self.masks is not None:
            raise ValueError("'masks' goes with 'images', not with 'preset'")
        return self


class EvalSet(DatasetSpec):
    """An evaluation set: a dataset, optionally its first ``first`` pairs (sorted stems) and its own single
    input resolution (default ``predict.resolutions``): the same data at several resolutions are several sets.
    ``cod_metrics``: also score it with PySODMetrics' COD metrics (S_m, F_w, E_xi, MAE); by default only the
    COD benchmarks are, as in the paper (Table 1: F_max, IoU, Acc on SOD sets; Table 2: COD metrics)."""

    first: int | None = Field(None, ge=1)
    resolution: int | None = Field(None, gt=0)
    cod_metrics: bool | None = None

    @property
    def scores_cod(self) -> bool:
        return self.preset in COD_PRESETS if self.cod_metrics is None else self.cod_metrics


class TrainData(Group):
    dataset: DatasetSpec
    sample_size: int = Field(1000, ge=1)     # paper Sec. 4.1: 1000 random DUTS-TR images
    sample_seed: int = 111                   # official code: random.Random(111).sample(sorted(paths), 1000)


class DataParams(Group):
    train: TrainData
    eval: dict[Name, EvalSet] = Field(min_length=1)


class BackboneParams(Group):
    name: str = "facebook/dinov3-vit7b16-pretrain-lvd1689m"
    resolution: int = Field(768, gt=0)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    features: Literal["tokens", "keys"] = "tokens"   # the last layer's tokens (paper) or its attention keys
    batch_size: int = _runtime(4, ge=1)
    workers: int = _runtime(4, ge=1)
    device: str = _runtime("auto", pattern=DEVICE_PATTERN)


class CompressorParams(Group):
    name: Literal["none", "blosc", "zstd"] = "blosc"
    cname: Literal["lz4", "lz4hc", "zstd", "zlib", "blosclz"] = "zstd"   # blosc only
    clevel: int = Field(3, ge=0, le=22)

    @model_validator(mode="after")
    def _level(self):
        if self.name == "blosc" and self.clevel > 9:
            raise ValueError(f"blosc clevel must be 0..9, got {self.clevel}")
        return self


class StoreParams(Group):
    images_per_shard: int = Field(64, ge=1)
    compressor: CompressorParams = CompressorParams()


class NCutParams(Group):
    """Sec. 3.1, Eq. 1-4 (docs/method.md "Method: NCut")."""

    tau: float = Field(0.2, ge=-1, lt=1)
    eps: float = Field(1e-5, gt=0, lt=1)
    graph: Literal["binary", "weighted"] = "binary"
    solver: Literal["dense", "lanczos"] = "lanczos"
    degenerate_tol: float = Field(1e-6, ge=1e-6, lt=1)  # finer is below the float32 graph's own rounding


class IPOParams(Group):
    """Sec. 3.2, Eq. 5-8 (docs/method.md "Method: IPO")."""

    iters: int = Field(20, ge=1)
    min_cluster: int = Field(10, ge=1)


class PseudoParams(Group):
    method: Literal[METHODS] = "ncut_ipo"  # type: ignore[valid-type]
    kmeans_seed: int = Field(0, ge=0)
    chunk_size: int = _runtime(32, ge=1)
    workers: int = _runtime(2, ge=1)


class HeadParams(Group):
    hidden: int = Field(128, ge=1)
    embed: int = Field(128, ge=1)


class LossParams(Group):
    """Eq. 13 weights and the paper/code variants of Eq. 10-11 (docs/method.md "Method: head and losses")."""

    w_bce: float = Field(1.0, ge=0)
    w_dice: float = Field(1.0, ge=0)
    w_con: float = Field(0.1, ge=0)
    temperature: float = Field(0.05, gt=0)
    dice_squared: bool = True
    include_self: bool = False

    @model_validator(mode="after")
    def _something_to_learn(self):
        if not (self.w_bce or self.w_dice or self.w_con):
            raise ValueError("w_bce, w_dice and w_con are all 0: nothing to train on")
        return self


class TrainParams(Group):
    epochs: int = Field(3, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    seed: int = Field(0, ge=0)
    rounds: int = Field(1, ge=1)                     # 1 = the paper; R > 1: R - 1 self-training rounds
    round_threshold: float = Field(0.5, gt=0, lt=1)  # p > threshold: a patch's label for the next round
    device: str = _runtime("auto", pattern=DEVICE_PATTERN)
    cache_gb: float = _runtime(4.0, ge=0)            # keep decoded features in memory when the store fits


class BilateralParams(Group):
    """The fast bilateral solver (Barron and Poole 2016) with TokenCut's settings (docs/method.md
    "Post-processing")."""
    sigma_spatial: float = Field(16, gt=0)   # pixels per bilateral-grid cell
    sigma_luma: float = Field(16, gt=0)      # luma levels per cell
    sigma_chroma: float = Field(8, gt=0)     # chroma levels per cell
    lam: float = Field(256, gt=0)            # smoothness against fidelity to the map
    max_iter: int = Field(25, ge=1)          # conjugate-gradient iterations
    tol: float = Field(1e-5, gt=0)           # their relative residual


class PredictParams(Group):
    """Inference views (docs/results.md "Beyond the paper"): the head's maps at every resolution, and of the
    mirrored image when ``hflip``, upsampled to the image size and averaged. The first resolution is the
    paper's single one and the one the bipartition baselines run at."""

    resolutions: list[Annotated[int, Field(gt=0)]] = Field([768], min_length=1)
    hflip: bool = False
    threshold: float = Field(0.5, gt=0, lt=1)        # binary masks: foreground where p > threshold
    cache_features: bool = True                      # false: evaluation sets go image -> backbone -> maps, no store
    # the authors' released head (their torch file) evaluated beside this project's head, on the same features
    # and views; its sha256 makes a changed file a changed param (docs/release.md)
    release_head: str = ""
    release_sha256: str = Field("", pattern=r"^([0-9a-f]{64})?$")
    # the head's maps refined along the image's edges (the release's option; the paper's recipe uses none)
    postprocess: Literal["none", "bilateral"] = "none"
    bilateral: BilateralParams = BilateralParams()
    workers: int = _runtime(2, ge=1)
    chunk_size: int = _runtime(16, ge=1)

    @model_validator(mode="after")
    def _distinct(self):
        if len(set(self.resolutions)) != len(self.resolutions):
            raise ValueError(f"resolutions {self.resolutions} repeat a value")
        if bool(self.release_head) != bool(self.release_sha256):
            raise ValueError("release_head and release_sha256 go together (sha256sum of the file)")
        return self


class BootstrapParams(Group):
    """Percentile bootstrap over images (docs/experiments.md "Intervals and paired comparisons")."""
    resamples: int = Field(1000, ge=1)
    seed: int = 0
    level: float = Field(0.95, gt=0, lt=1)


class EvaluateParams(Group):
    workers: int = _runtime(2, ge=1)
    chunk_size: int = _runtime(32, ge=1)
    bootstrap: BootstrapParams = BootstrapParams()


class PlotsParams(Group):
    vega_lite: str = Field("5.21", pattern=r"^\d+\.\d+$")  # Vega-Lite of the offline plots page (DVC's specs are v5)


class Params(Group):
    launch: str = ""
    demo: DemoParams = DemoParams()
    data: DataParams
    backbone: BackboneParams = BackboneParams()
    store: StoreParams = StoreParams()
    ncut: NCutParams = NCutParams()
    ipo: IPOParams = IPOParams()
    pseudo: PseudoParams = PseudoParams()
    head: HeadParams = HeadParams()
    loss: LossParams = LossParams()
    train: TrainParams = TrainParams()
    predict: PredictParams = PredictParams()
    evaluate: EvaluateParams = EvaluateParams()
    plots: PlotsParams = PlotsParams()

    @model_validator(mode="after")
    def _demo_sets_are_the_ones_used(self):
        """The demo stage runs exactly when a dataset is a demo set (data/<name> of ``demo.write``)."""
        used = {Path(s.root).name for s in (self.data.train.dataset, *self.data.eval.values())
                if Path(s.root).parent == Path("data")}
        if set(self.demo.write) != used:
            raise ValueError(f"demo.write is {sorted(self.demo.write)} but the datasets use "
                             f"{sorted(f'data/{u}' for u in used) or 'no demo set'}: set demo.write: {sorted(used)}")
        return self


# ---------------------------------------------------------------------------------------------------
# Loading with one-line errors


def _dotted(loc) -> str:
    return ".".join(str(part) for part in loc if part != "[key]")


def _model_at(loc) -> type[BaseModel] | None:
    """The model class that holds the last key of ``loc`` (walking fields, dict values, optionals)."""
    cur: Any = Params
    for part in loc[:-1]:
        if isinstance(cur, type) and issubclass(cur, BaseModel):
            if part not in cur.model_fields:
                return None
            cur = cur.model_fields[part].annotation
        elif typing.get_origin(cur) is dict:
            cur = typing.get_args(cur)[1]
        else:
            return None
        args = [a for a in typing.get_args(cur) if a is not type(None)]
        if typing.get_origin(cur) is not dict and len(args) == 1:
            cur = args[0]
    return cur if isinstance(cur, type) and issubclass(cur, BaseModel) else None


def _allowed(error: dict) -> str:
    kind, ctx = error["type"], error.get("ctx", {})
    if kind == "literal_error":
        return "must be one of " + ctx["expected"].replace("'", "").replace(" or ", ", ")
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        model, key = _model_at(error["loc"]), error["loc"][-1]
        field = model.model_fields[key] if model and key in model.model_fields else None
        limits = [f"{op} {getattr(m, attr)}" for m in (field.metadata if field else [])
                  for attr, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
                  if getattr(m, attr, None) is not None]
        return "must be " + (" and ".join(limits) or f"{bounds[kind]} {next(iter(ctx.values()))}")
    if kind == "string_pattern_mismatch":
        return PATTERN_HELP.get(ctx["pattern"], f"must match {ctx['pattern']}")
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "must be a mapping of keys"
    return error["msg"].replace("Input should be", "must be").replace("Value error, ", "")


def _describe(error: dict) -> str:
    loc = error["loc"]
    if error["type"] == "extra_forbidden":
        model = _model_at(loc)
        known = list(model.model_fields) if model else []
        near = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f" (did you mean {_dotted((*loc[:-1], near[0]))}?)" if near else (
            f" (known: {', '.join(known)})" if known else "")
        return f"{_dotted(loc)}: unknown key{hint}"
    if error["type"] == "missing":
        return f"{_dotted(loc)}: missing key"
    where = _dotted(loc) or "(top level)"
    if error["type"] == "value_error":  # a rule across keys of one group (model validators above)
        return f"{where}: {_allowed(error)}" if loc else _allowed(error)
    return f"{where} = {error['input']!r}: {_allowed(error)}"


def _missing(model: type[BaseModel], data: Any, prefix: tuple = ()) -> tuple | None:
    """First key of ``model`` with a non-None default that ``data`` leaves out (every number is explicit)."""
    if not isinstance(data, dict):
        return None
    for key, field in model.model_fields.items():
        sub = field.annotation
        if key not in data:
            if field.default is not None:
                return (*prefix, key)
            continue
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            found = _missing(sub, data[key], (*prefix, key))
            if found:
                return found
    return None


def parse_params(data: Any, source: str = "params.yaml") -> Params:
    """Validate a params mapping; raise ParamsError with one line naming the key, value and what is allowed."""
    if not isinstance(data, dict):
        raise ParamsError(f"{source}: must be a mapping of params groups, got {type(data).__name__}")
    try:
        params = Params.model_validate(data)
    except ValidationError as exc:
        raise ParamsError(f"{source}: {_describe(exc.errors()[0])}") from None
    missing = _missing(Params, data)
    if missing:
        raise ParamsError(f"{source}: {_dotted(missing)}: missing key (every param is spelled out in the file)")
    return params


def load_params(path: Path | str) -> Params:
    """Read and validate a params YAML file (:func:`parse_params`)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ParamsError(f"{path}: cannot read params ({' '.join(str(exc).split())})") from None
    return parse_params(data, str(path))


# ---------------------------------------------------------------------------------------------------
# What a stage may read


def is_runtime(model: BaseModel, key: str) -> bool:
    field = type(model).model_fields.get(key) if isinstance(model, BaseModel) else None
    return bool(field and field.json_schema_extra == RUNTIME)


class ParamsView:
    """Read-only view of validated params that allows exactly the keys a stage declares (its DVC
    ``params:``) and runtime fields; reading any other key raises, so a stage cannot depend on a param
    that DVC does not track for it. ``view.ncut`` returns the real typed group when ``ncut`` is declared."""

    def __init__(self, obj: Any, declared: frozenset[str], path: str = ""):
        self._obj, self._declared, self._path = obj, declared, path

    def _child(self, key: str, value: Any, runtime: bool) -> Any:
        path = f"{self._path}.{key}" if self._path else key
        if runtime or any(path == d or path.startswith(d + ".") for d in self._declared):
            return value
        if isinstance(value, (BaseModel, dict)):  # a group: its declared and runtime keys are checked below
            return ParamsView(value, self._declared, path)
        raise ParamsError(f"this stage reads params key {path!r} that it does not declare "
                          f"(declared: {', '.join(sorted(self._declared))})")

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        return self._child(key, getattr(self._obj, key), is_runtime(self._obj, key))

    def __getitem__(self, key: str) -> Any:
        if key not in self._obj:
            raise ParamsError(f"{self._path}: has no key {key!r} (keys: {', '.join(self._obj)})")
        return self._child(key, self._obj[key], False)
