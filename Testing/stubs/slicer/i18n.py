"""Stand-in for ``slicer.i18n`` (it needs the Qt application): no translation."""


def tr(text):
    """Return the text untranslated."""
    return text
