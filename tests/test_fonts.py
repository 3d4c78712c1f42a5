"""Class names in any script are drawn with a font that has them: labels on pictures and figures' text."""

from __future__ import annotations

from visionkit.utils.fonts import label_font
from visionkit.utils.viz import undrawable


def test_labels_outside_latin_get_an_installed_font_that_has_their_script() -> None:
    """Pillow's default font is Latin only: 'кошка' drew as boxes. DejaVu Sans (which matplotlib ships, and most
    Linux systems) has Cyrillic, Greek, Arabic and Hebrew; Latin labels keep Pillow's default."""
    latin = label_font(12, ["cat 0.91", "café 0.05"])
    assert not isinstance(getattr(latin, "path", None), str)  # Pillow's own font, read from memory
    cyrillic = label_font(12, ["кошка 0.91"])
    assert str(cyrillic.path).endswith("DejaVuSans.ttf")
    assert cyrillic.getmask("кошка").getbbox() != latin.getmask("кошка").getbbox()  # drawn, not Pillow's boxes


def test_characters_no_font_draws_are_named() -> None:
    """A plot shows a character no installed font has as a box: training names such characters once."""
    assert undrawable(["cat", "café", "кошка", "𓀀 hieroglyph"]) == "𓀀"
