#compdef edgectl

_edgectl_completion() {
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" _EDGECTL_COMPLETE=complete_zsh edgectl)
}

compdef _edgectl_completion edgectl
