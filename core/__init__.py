"""Korean emotion-classifier studio: all logic lives here (no streamlit imports)."""

__version__ = "0.1.0"
