"""Who receives messages: phone numbers, the area hierarchy and recipient imports."""
