# The emulated SQAL board for the MicroPython unix port (see sqalfw/board.py for the interface).
# Kept import-free so host Python can read emulation.mpboard.exitcodes without pulling the board in;
# the board itself is emulation.mpboard.board.Board.
