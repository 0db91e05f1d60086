"""F-KOD Partner Platform."""
