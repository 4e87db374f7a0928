"""Comparing outputs with tolerance, as the nbval plugin does on a machine whose floats differ."""

import base64
import io

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure

from course_lib.tools.output_comparison import (
    Number,
    compare_outputs,
    compare_png,
    compare_text,
    decode_png,
    moved_ink,
    numbers_close,
    split_numbers,
)

matplotlib.use("Agg")


def stdout(text: str) -> dict:
    return {"output_type": "stream", "name": "stdout", "text": text}


def png(*curves, size=(3, 2)) -> str:
    figure = Figure(figsize=size, dpi=50)
    axes = figure.add_subplot()
    for curve in curves:
        axes.plot(curve)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode()


def image(encoded: str) -> dict:
    return {"output_type": "display_data", "data": {"image/png": encoded, "text/plain": "<Figure>"}}


def test_a_number_knows_the_unit_of_its_last_printed_digit():
    assert Number.parse("2.09") == Number(2.09, pytest.approx(0.01))
    assert Number.parse("16") == Number(16.0, 1.0)
    assert Number.parse("3.5e-05").quantum == pytest.approx(1e-6)


@pytest.mark.parametrize(
    "stored, fresh, close",
    [
        ("2.09", "2.1", True),  # the ch02 example: a rounding, not a change
        ("0.873", "0.851", True),  # 2.5%: another CPU's training run
        ("0.000", "0.001", True),  # one printed unit
        ("25.9", "26.0", True),
        ("0.5", "-0.5", False),  # a sign flip
        ("1.0", "10.0", False),  # an order of magnitude
        ("0.90", "0.30", False),  # a third of it
        ("-0.002", "-0.004", True),  # a difference of accuracies near zero: three printed units
        ("-0.010", "+0.010", False),  # ... but not a clear sign flip
        ("nan", "0.5", False),
        ("nan", "nan", True),
        ("inf", "inf", True),
    ],
)
def test_numbers_are_close_within_a_relative_tolerance_plus_the_printed_unit(stored, fresh, close):
    assert numbers_close(Number.parse(stored), Number.parse(fresh)) is close


def test_split_numbers_keeps_the_words_and_collapses_alignment_spaces():
    words, numbers = split_numbers("acc   0.85 (seeds: 1, 2)\n")
    assert words == ["acc ", " (seeds: ", ", ", ")\n"]
    assert [n.value for n in numbers] == [0.85, 1, 2]


def test_text_matches_when_only_numbers_moved_a_little_and_columns_realigned():
    stored = "scratch   test 0.873  epochs 16\nfine-tune test 0.950  epochs  4\n"
    fresh = "scratch   test 0.851  epochs 17\nfine-tune test 0.948  epochs 4\n"
    assert compare_text(stored, fresh) is None


def test_text_differs_when_a_word_changes_or_a_number_appears_or_moves_far():
    assert "text differs" in compare_text("best: Nesterov 0.10", "best: Adam 0.10")
    assert "2 numbers stored, 3 now" in compare_text("a 1 b 2", "a 1 b 2 3")
    message = compare_text("loss 0.40 after 10 epochs", "loss 1.20 after 10 epochs")
    assert "number #1" in message and "'loss'" in message


def test_images_of_the_same_plot_slightly_moved_match_and_other_plots_do_not():
    line = np.linspace(0, 1, 50)
    assert compare_png(png(line), png(line)) is None
    assert compare_png(png(line), png(line * 1.003)) is None
    assert moved_ink_between(png(line), png(line * 1.003)) < 0.05
    many = [np.sin(np.linspace(0, k, 50)) for k in range(1, 6)]
    assert "of its ink moved" in compare_png(png(line), png(*many))
    assert "is 200x100 pixels now, 150x100 pixels stored" in compare_png(
        png(line), png(line, size=(4, 2))
    )


def moved_ink_between(a: str, b: str) -> float:
    return moved_ink(decode_png(a), decode_png(b))


def test_outputs_must_keep_their_kinds_and_counts():
    line = png(np.linspace(0, 1, 50))
    assert (
        compare_outputs([stdout("acc 0.85\n"), image(line)], [stdout("acc 0.86\n"), image(line)])
        == []
    )
    assert (
        "output kinds differ" in compare_outputs([stdout("x\n"), image(line)], [stdout("x\n")])[0]
    )
    assert compare_outputs([image(line)], [image(line), image(line)]) == [
        "image/png: 1 stored, 2 now",
        "text/plain: 1 stored, 2 now",
    ]


def test_sanitize_applies_before_comparing():
    assert compare_outputs([stdout("took 3 s\n")], [stdout("took 9 s\n")], lambda s: "X") == []
