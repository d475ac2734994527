"""Code for the lumbar muscle Dixon segmentation bundle that MONAI, Ignite and SimpleITK do not provide."""
