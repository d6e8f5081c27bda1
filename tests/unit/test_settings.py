"""Config loading (deblurd.settings.load) and the generated config/schema (settings.docs)."""

from __future__ import annotations

import inspect
import json
import re
import tomllib
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pytest
from pydantic import BaseModel, Field

from deblurd.errors import ConfigError
from deblurd.settings import EX_CONFIG, DeblurdSettings, check_config, load_settings
from deblurd.settings.base import Section, annotation_shape
from deblurd.settings.camera import (
    CAMERA_BACKENDS,
    ArgusCameraSection,
    CameraSettings,
    V4l2CameraSection,
)
from deblurd.settings.docs import render_schema, render_toml
from tool_modules import load_tool

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "deblurd.toml"
SCHEMA = ROOT / "config" / "deblurd.schema.json"
REGENERATE = "stale: run `python tools/gen_config.py` after changing the settings models"


def load(text: str, tmp_path: Path, env: dict[str, str] | None = None) -> DeblurdSettings:
    path = tmp_path / "deblurd.toml"
    path.write_text(text, encoding="utf-8")
    return load_settings(path, env={} if env is None else env)


def problems(text: str, tmp_path: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load(text, tmp_path, env)
    assert info.value.problems, "a ConfigError must list its problems"
    return dict(info.value.problems)


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    """Every model class inside an annotation (unions, lists, Annotated, Optional)."""
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        yield annotation
    elif get_origin(annotation) in (Annotated, Union, types.UnionType, list, tuple, dict):
        for arg in get_args(annotation):
            yield from _models_in(arg)


def all_models(model: type[BaseModel]) -> list[type[BaseModel]]:
    """The model and every model reachable from its fields (independent of settings.base)."""
    seen: list[type[BaseModel]] = []
    todo = [model]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.append(current)
        for info in current.model_fields.values():
            todo += list(_models_in(info.annotation))
    return seen


# --------------------------------------------------------------------------- the committed files


def test_committed_config_loads_and_equals_defaults() -> None:
    assert load_settings(CONFIG, env={}) == DeblurdSettings()
    assert load_settings(None, env={}) == DeblurdSettings()


def test_committed_config_writes_every_default_explicitly() -> None:
    parsed = tomllib.loads(CONFIG.read_text(encoding="utf-8"))
    assert parsed == DeblurdSettings().model_dump(mode="python", exclude_none=True)


def test_committed_config_is_up_to_date_with_the_models() -> None:
    assert CONFIG.read_text(encoding="utf-8") == render_toml(), REGENERATE
    assert SCHEMA.read_text(encoding="utf-8") == render_schema(), REGENERATE


def test_every_field_of_every_model_is_documented_in_the_config() -> None:
    text = CONFIG.read_text(encoding="utf-8")
    missing = []
    for model in all_models(DeblurdSettings):
        for name in model.model_fields:
            # a table header, a live key, a commented-out key (unset default, other variant)
            # or a key of an array's rows
            key = re.escape(name)
            if not re.search(rf"(?m)^\[([\w.]+\.)?{key}\]$|(^(# )?|[{{,] ){key} = ", text):
                missing.append(f"{model.__name__}.{name}")
    assert not missing, f"not in {CONFIG.name}: {missing}"


def test_every_section_has_its_table_header() -> None:
    text = CONFIG.read_text(encoding="utf-8")
    defaults = DeblurdSettings()
    for name in DeblurdSettings.model_fields:
        assert f"\n[{name}]\n" in text, name
        section = type(getattr(defaults, name))  # of a tagged section: its default variant
        doc = inspect.cleandoc(getattr(section, "__doc__", None) or "")
        assert doc.split()[0] in text


def test_literals_bounds_and_variants_are_documented() -> None:
    text = CONFIG.read_text(encoding="utf-8")
    assert '# one of "sequential", "reference"' in text
    assert "64 <= width <= 8192" in text
    assert "0.0 < fps <= 240.0" in text
    # the default runtime is live, the other variant's keys are commented out
    runtime = text.split("[inference.runtime]")[1]
    assert '\ntype = "onnxruntime"\n' in runtime
    assert '\n# type = "tensorrt"' in runtime
    assert "\n# fallback_to_onnxruntime = false" in runtime
    # an unset default is shown commented out
    assert "\n# first_blur_threshold = " in text
    assert "ring_frames = [\n    { max_blur = 24.0, frames = 4 }," in text


def test_schema_is_json_and_lists_every_section() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert set(schema["properties"]) == set(DeblurdSettings.model_fields)
    assert schema["additionalProperties"] is False


# --------------------------------------------------------------------------- the generator


class _Row(Section):
    """A row."""

    a: float = Field(description="row value")
    b: int = Field(1, ge=0, le=9)


class _VarA(Section):
    """Variant A."""

    kind: Literal["a"] = "a"
    x: int = Field(1, description="only in A")


class _VarB(Section):
    """Variant B."""

    kind: Literal["b"] = "b"
    y: str = 'it\'s "quoted" \\ µ'
    z: float | None = None


class _Deep(Section):
    """A table in a table."""

    on: bool = False


class _Inner(Section):
    """The inner section."""

    opt: float | None = Field(None, description="unset by default")
    rows: list[_Row] = Field(default_factory=lambda: [_Row(a=1.5), _Row(a=1e9, b=3)])
    empty: list[int] = Field(default_factory=list)
    numbers: list[float] = Field(default_factory=lambda: [0.5, 1.0])
    sub: Annotated[_VarA | _VarB, Field(discriminator="kind")] = Field(default_factory=_VarB)
    deep: _Deep = Field(default_factory=_Deep)


class _Root(Section):
    """Root."""

    top: bool = True
    inner: _Inner = Field(default_factory=_Inner)


def test_render_toml_follows_whatever_the_models_are() -> None:
    text = render_toml(_Root)
    assert _Root.model_validate(tomllib.loads(text)) == _Root()
    assert "[inner.sub]" in text and "[inner.deep]" in text
    assert "\n# x = 1" in text  # the non-default variant, commented out
    assert "\n# opt = <float>" in text
    assert "rows = [\n    { a = 1.5, b = 1 },\n    { a = 1e9, b = 3 },\n]" in text
    assert "#   b: integer, 0 <= b <= 9" in text


def test_gen_config_writes_and_checks(tmp_path: Path) -> None:
    gen = load_tool("gen_config")
    assert gen.main(["--root", str(tmp_path), "--check"]) == 1
    assert gen.main(["--root", str(tmp_path)]) == 0
    assert (tmp_path / "config" / "deblurd.toml").read_text(encoding="utf-8") == render_toml()
    assert gen.main(["--root", str(tmp_path), "--check"]) == 0
    (tmp_path / "config" / "deblurd.schema.json").write_text("{}", encoding="utf-8")
    assert gen.main(["--root", str(tmp_path), "--check"]) == 1
    assert [p.name for p in (tmp_path / "config").iterdir() if p.name.startswith(".")] == []


# --------------------------------------------------------------------------- file errors


def test_unknown_key_is_named_with_its_section_and_a_suggestion(tmp_path: Path) -> None:
    found = problems('[fusion]\nmoed = "sequential"\n', tmp_path)
    assert "unknown key 'fusion.moed'" in found["fusion.moed"]
    assert "did you mean 'fusion.mode'" in found["fusion.moed"]


def test_unknown_key_in_the_wrong_section_says_where_it_belongs(tmp_path: Path) -> None:
    found = problems("[registration]\nsharpen_amount = 1.0\n", tmp_path)
    assert "'finishing.sharpen_amount'" in found["registration.sharpen_amount"]


def test_unknown_section(tmp_path: Path) -> None:
    found = problems("[fusoin]\nmode = 'sequential'\n", tmp_path)
    assert "did you mean 'fusion'" in found["fusoin"]


def test_wrong_type_names_the_key_path_and_the_value(tmp_path: Path) -> None:
    found = problems('[camera]\nwidth = "1280"\n[fusion]\nmode = "seq"\n', tmp_path)
    assert '"1280"' in found["camera.width"] and "integer" in found["camera.width"]
    assert '"seq"' in found["fusion.mode"] and '"sequential", "reference"' in found["fusion.mode"]


def test_bound_violation_names_the_bound_and_value(tmp_path: Path) -> None:
    found = problems("[camera]\nwidth = 32\n", tmp_path)
    assert "64" in found["camera.width"] and "32" in found["camera.width"]


def test_error_in_a_list_item_names_its_index(tmp_path: Path) -> None:
    text = (
        "[decision]\nring_frames = [{ max_blur = 0.3, frames = 4 }, "
        '{ max_blur = 0.5, frames = "6" }, { max_blur = 1e9, frames = 99 }]\n'
    )
    found = problems(text, tmp_path)
    assert set(found) == {"decision.ring_frames[1].frames", "decision.ring_frames[2].frames"}
    assert "99" in found["decision.ring_frames[2].frames"]


def test_table_level_rule_is_reported_on_its_key(tmp_path: Path) -> None:
    text = (
        "[decision]\nring_frames = [{ max_blur = 0.5, frames = 4 }, { max_blur = 0.3, frames = 4 }]"
    )
    found = problems(text, tmp_path)
    assert "sorted" in found["decision.ring_frames"]


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    found = problems("[camera]\nwidth = 1\nheight = 1\n[output]\nformat = 'gif'\n", tmp_path)
    assert set(found) == {"camera.width", "camera.height", "output.format"}


def test_tagged_table_errors(tmp_path: Path) -> None:
    found = problems('[inference.runtime]\ntype = "cuda"\n', tmp_path)
    assert '"cuda"' in found["inference.runtime.type"]
    found = problems('[inference.runtime]\ntype = "tensorrt"\nthreads = 4\n', tmp_path)
    assert 'only type = "onnxruntime"' in found["inference.runtime.threads"]


def test_tagged_table_without_its_tag_tunes_the_default_variant(tmp_path: Path) -> None:
    settings = load("[inference.runtime]\nthreads = 2\n", tmp_path)
    assert settings.inference.runtime.type == "onnxruntime"
    assert settings.inference.runtime.threads == 2


def test_camera_holds_only_the_chosen_backends_table(tmp_path: Path) -> None:
    text = '[camera]\nbackend = "v4l2"\nwidth = 640\n[camera.v4l2]\nfourcc = "MJPG"\n'
    settings = load(text, tmp_path)
    assert isinstance(settings.camera, V4l2CameraSection)
    assert settings.camera.width == 640 and settings.camera.v4l2.fourcc == "MJPG"
    assert not hasattr(settings.camera, "sim")
    found = problems('[camera]\nbackend = "sim"\n[camera.replay]\npath = "x"\n', tmp_path)
    assert 'only backend = "replay"' in found["camera.replay"]
    found = problems('[camera]\nbackend = "usb"\n', tmp_path)
    assert '"usb"' in found["camera.backend"] and '"v4l2"' in found["camera.backend"]


def test_env_switching_the_camera_backend_drops_the_files_table() -> None:
    settings = load_settings(CONFIG, env={"DEBLURD_CAMERA__BACKEND": "argus"})
    assert isinstance(settings.camera, ArgusCameraSection)


def test_camera_backends_table_is_the_unions() -> None:
    assert dict(CAMERA_BACKENDS) == dict(annotation_shape(CameraSettings).variants)
    for tag, section in CAMERA_BACKENDS.items():
        assert section.model_fields["backend"].default == tag


def test_invalid_toml_reports_line_and_column(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load('[fusion]\nmode = "reference"\nrobust = yes\n', tmp_path)
    (key, message), *_ = info.value.problems
    assert key == "" and "line 3" in message and "column 10" in message
    assert "robust = yes" in message
    assert isinstance(info.value.__cause__, tomllib.TOMLDecodeError)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "nope.toml", env={})
    assert "not found" in str(info.value)
    assert "nope.toml" in str(info.value)


def test_empty_file_is_the_defaults(tmp_path: Path) -> None:
    assert load("", tmp_path) == DeblurdSettings()


# --------------------------------------------------------------------------- environment


def test_env_overrides_apply_with_proper_types(tmp_path: Path) -> None:
    env = {
        "DEBLURD_FUSION__MODE": "sequential",
        "DEBLURD_DECISION__SECOND_BLUR_THRESHOLD": "0.4",
        "deblurd_camera__width": "640",  # names are case-insensitive
        "DEBLURD_OUTPUT__SAVE_BURSTS": "true",
        "DEBLURD_OUTPUT__DIRECTORY": "1234",  # a string key keeps the string
        "DEBLURD_SELECTION__FIRST_BLUR_THRESHOLD": "0.25",
        "DEBLURD_DECISION__RING_FRAMES": "[{ max_blur = 1e9, frames = 3 }]",
        "HOME": "/ignored",
    }
    settings = load_settings(CONFIG, env=env)
    assert settings.fusion.mode == "sequential"
    assert settings.decision.second_blur_threshold == 0.4
    assert settings.camera.width == 640
    assert settings.output.save_bursts is True
    assert settings.output.directory == "1234"
    assert settings.selection.first_blur_threshold == 0.25
    assert [(r.max_blur, r.frames) for r in settings.decision.ring_frames] == [(1e9, 3)]


def test_env_overrides_win_over_the_file(tmp_path: Path) -> None:
    settings = load(
        '[fusion]\nmode = "reference"\n', tmp_path, {"DEBLURD_FUSION__MODE": "sequential"}
    )
    assert settings.fusion.mode == "sequential"


def test_env_switching_a_variant_drops_the_files_keys_of_the_old_one() -> None:
    env = {
        "DEBLURD_INFERENCE__RUNTIME__TYPE": "tensorrt",
        "DEBLURD_INFERENCE__RUNTIME__FALLBACK_TO_ONNXRUNTIME": "true",
    }
    runtime = load_settings(CONFIG, env=env).inference.runtime
    assert runtime.type == "tensorrt"
    assert runtime.fallback_to_onnxruntime is True


def test_env_unknown_key_names_the_variable(tmp_path: Path) -> None:
    found = problems("", tmp_path, {"DEBLURD_FUSION__MOED": "sequential"})
    assert "DEBLURD_FUSION__MOED" in found["fusion.moed"]
    assert "DEBLURD_FUSION__MODE" in found["fusion.moed"]  # the suggestion
    found = problems("", tmp_path, {"DEBLURD_FUSION_MODE": "sequential"})
    assert "did you mean DEBLURD_FUSION__MODE" in found["fusion_mode"]


def test_env_bad_value_names_the_variable(tmp_path: Path) -> None:
    found = problems("", tmp_path, {"DEBLURD_CAMERA__FPS": "fast", "DEBLURD_FUSION__MODE": "x"})
    assert "DEBLURD_CAMERA__FPS" in found["camera.fps"] and '"fast"' in found["camera.fps"]
    assert "environment variable DEBLURD_FUSION__MODE" in found["fusion.mode"]


def test_env_cannot_reach_inside_a_value(tmp_path: Path) -> None:
    found = problems("", tmp_path, {"DEBLURD_FUSION__MODE__X": "1"})
    assert "DEBLURD_FUSION__MODE__X" in found["fusion.mode"]


def test_reserved_and_foreign_variables_are_ignored() -> None:
    env = {"DEBLURD_CONFIG": "/etc/deblurd.toml", "PATH": "/bin"}
    assert load_settings(None, env=env) == DeblurdSettings()


# --------------------------------------------------------------------------- check-config


def test_check_config_ok_on_the_default_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_config(CONFIG, env={}) == 0
    assert capsys.readouterr().out.strip() == f"OK: {CONFIG}"


def test_check_config_prints_key_paths_and_returns_ex_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[fusion]\nmoed = 1\n[camera]\nwidth = "wide"\n', encoding="utf-8")
    assert check_config(path, env={}) == EX_CONFIG == 78
    err = capsys.readouterr().err.splitlines()
    assert f"{path}: fusion.moed: unknown key 'fusion.moed' (did you mean 'fusion.mode'?)" in err
    assert any(line.startswith(f"{path}: camera.width: ") and '"wide"' in line for line in err)


def test_check_config_on_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check_config(tmp_path / "none.toml", env={}) == EX_CONFIG
    assert "none.toml: config file not found" in capsys.readouterr().err
