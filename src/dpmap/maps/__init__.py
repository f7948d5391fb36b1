"""Maps of releases: what is drawn (layers.py, shared), static images (static.py,
matplotlib) and offline interactive HTML (interactive.py, folium)."""
