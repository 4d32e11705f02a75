"""Presentation: units and wording, findings in words, and Plotly charts from DataFrames (no Streamlit)."""
