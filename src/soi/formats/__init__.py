"""Import and export of other tools' training-dynamics formats.

* :mod:`soi.formats.cartography` -- allenai/cartography (Swayamdipta et al., 2020) ``training_dynamics/``
  JSON-lines files and ``td_metrics.jsonl``.
"""

from soi.formats.cartography import export_cartography, import_cartography

__all__ = ["export_cartography", "import_cartography"]
