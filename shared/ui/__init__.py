"""The dashboard's presentation: templates, their rendering and assets, and who may see them."""
