"""The commands: one module per `linkcare` command, each the one place that takes the output's lock,
opens its all-or-nothing output folder, runs the library and writes its manifest. The command line
(linkcare.cli) parses options and prints; the algorithms below never import a command."""
