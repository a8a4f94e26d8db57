"""Framework glue for publishing from web apps: :mod:`ssehub.contrib.django` and
:mod:`ssehub.contrib.flask` (each needs its framework: ``pip install 'ssehub[django]'``)."""
