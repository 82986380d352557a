from sparseprune.cli import main

main()
