"""Code for the lumbar muscle Dixon segmentation bundle that MONAI, Ignite and SimpleITK do not provide.

One package per pipeline stage (``data``, ``prepare``, ``training``, ``inference``, ``report``), the phantoms
(``phantom``) and the measuring tools (``tools``); at this level only what every stage uses. docs/README.md
("Where things are") draws the path a scan takes through them.
"""

from pathlib import Path

BUNDLE_ROOT = Path(__file__).resolve().parents[1]  # the bundle's root: configs/, models/, sample/
