#!/usr/bin/env python
"""A Django site whose saved notes reach every open page live, through ssehub.

ssehub serve --jwt-key "$SSEHUB_JWT_KEY" --cors-origins http://127.0.0.1:8001 &
python manage.py migrate
python manage.py runserver 8001           # open http://127.0.0.1:8001/
python manage.py shell -c "from notes.models import Note; Note.objects.create(text='hi')"
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "live.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
