"""The interactive few-shot app (Streamlit): `make app`. UI in streamlit_app.py, logic in logic.py."""
