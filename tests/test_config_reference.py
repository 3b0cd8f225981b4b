"""The YAML reference of the documentation site, read off the config sections:
every option has its docstring entry, and the page shows each one's facts.

Fast (no TensorFlow): the same check the documentation build makes
(`docs/hooks.py`), so the suite catches an undocumented option without mkdocs.
"""

from __future__ import annotations

import dataclasses
import gc
from typing import ClassVar, Literal

from kerastrain.config import PipelineConfig, TrainConfig, reference
from kerastrain.config.base import Section, option
from kerastrain.config.compress import LayerSelection, PruneConfig


def test_every_config_option_has_an_attributes_entry():
    assert reference.undocumented() == []


def test_the_check_walks_every_section_class_and_names_an_undocumented_option():
    @dataclasses.dataclass
    class ProbeConfig(Section):
        """A section made for this test.

        Attributes:
            known: Documented. Defaults to `1`.
        """

        _path: ClassVar[str] = "probe"

        known: int = 1
        unknown: int = 2

    try:
        assert ProbeConfig not in reference.all_sections()  # kerastrain's own only
        assert ProbeConfig in reference.all_sections(within=__name__)
        assert reference.undocumented(within=__name__) == ["ProbeConfig.unknown (probe.unknown)"]
        assert "ProbeConfig.unknown (probe.unknown)" in reference.undocumented(within="")
    finally:
        del ProbeConfig
        gc.collect()  # Section's subclass list holds weak references
    assert reference.undocumented(within=__name__) == []


def test_attributes_reads_multiline_entries_and_stops_at_the_block_end():
    class Documented:
        """Summary.

        Attributes:
            first: One line. Defaults to `1`.
            second: Starts here
                and goes on here.
            third (int): With a type in brackets.

        A paragraph after the block, with a colon: not an entry.
        """

    assert reference.attributes(Documented) == {
        "first": "One line. Defaults to `1`.",
        "second": "Starts here and goes on here.",
        "third": "With a type in brackets.",
    }


def test_an_inherited_option_is_documented_by_the_section_it_comes_from():
    own = reference.attributes(PruneConfig)
    assert "layers" not in own
    assert "layers" in reference.attributes(LayerSelection)
    assert (
        reference.documented(PruneConfig)["layers"]
        == reference.attributes(LayerSelection)["layers"]
    )


def test_the_reference_shows_every_option_with_type_default_bounds_and_text():
    sections = {(s.path, s.name): s for s in reference.reference()}
    train = sections[("train", "TrainConfig")]
    epochs = next(o for o in train.options if o.key == "epochs")
    assert (epochs.type, epochs.default, epochs.bounds) == ("an integer", "20", "> 0")
    assert epochs.text.startswith("Training epochs")
    optimizer = next(o for o in train.options if o.key == "optimizer")
    assert "'adam'" in optimizer.type and "'sgd'" in optimizer.type
    warmup = next(o for o in train.options if o.key == "warmup")
    assert warmup.section == "train.warmup"
    schedule_options = next(o for o in train.options if o.key == "schedule_options")
    assert schedule_options.chosen_by[0] == "schedule"
    assert ("step", "StepOptions") in schedule_options.chosen_by[1]
    # A base lending its options (LayerSelection) is shown through its sections.
    assert all(name != "LayerSelection" for _, name in sections)

    page = reference.markdown()
    for cls in (PipelineConfig, TrainConfig):
        for f in dataclasses.fields(cls):
            assert f"### `{f.name}` {{ #{cls.__name__.lower()}-{f.name} }}" in page
    assert "an integer · default `20` · > 0" in page
    for doc in reference.reference():
        assert f"{{ #{doc.name.lower()} }}" in page
        for opt in doc.options:
            assert f"{{ #{doc.name.lower()}-{opt.key} }}" in page
    assert epochs.text in page


def test_bounds_and_defaults_are_written_as_yaml():
    @dataclasses.dataclass
    class Shapes(Section):
        """Probe.

        Attributes:
            share: A share. Defaults to `0.5`.
            kind: A kind. Defaults to `"a"`.
            items: Items. Defaults to `[]`.
            flag: A flag. Defaults to `None`.
        """

        _path: ClassVar[str] = "shapes"

        share: float = option(0.5, gt=0.0, le=1.0)
        kind: Literal["a", "b"] = "a"
        items: list[str] = dataclasses.field(default_factory=list)
        flag: bool | None = None

    try:
        doc = next(d for d in reference.reference(within=__name__) if d.name == "Shapes")
        facts = {o.key: (o.type, o.default, o.bounds) for o in doc.options}
    finally:
        del Shapes, doc
        gc.collect()
    assert facts == {
        "share": ("a number", "0.5", "> 0 and <= 1"),
        "kind": ("one of 'a', 'b'", '"a"', ""),
        "items": ("a list of a string", "[]", ""),
        "flag": ("true or false or None", "null", ""),
    }


def test_text_outside_code_cannot_become_html_and_section_names_link():
    names = {"WarmupConfig"}
    assert reference._linked("See `WarmupConfig`; `<run>/x` or a <b> tag.", names) == (
        "See [`WarmupConfig`](#warmupconfig); `<run>/x` or a &lt;b> tag."
    )
