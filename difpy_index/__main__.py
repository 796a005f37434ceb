from difpy_index.cli import main

main()
