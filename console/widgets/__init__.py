"""The console's widgets, one per module. Nothing is imported here, so a
screen pays only for the widgets it uses."""
