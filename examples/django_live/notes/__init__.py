"""Notes: saved in the database, pushed to open pages by ssehub."""
