"""deblurd.camera"""
