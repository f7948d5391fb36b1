"""Maps of releases: static images (matplotlib) and offline interactive HTML (folium)."""
