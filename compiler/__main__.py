from distillc.cli import main

main()
