"""deblurd.settings"""
