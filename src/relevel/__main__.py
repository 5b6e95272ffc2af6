from relevel.cli import main

main()
