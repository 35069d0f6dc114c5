"""Every action a playbook step can take, by the key that names it in TOML."""

from __future__ import annotations

from edgectl.provision.actions.apt import Apt
from edgectl.provision.actions.base import Action
from edgectl.provision.actions.clock import Clock
from edgectl.provision.actions.command import CommandAction
from edgectl.provision.actions.files import Directory, File, Template
from edgectl.provision.actions.pip import Pip
from edgectl.provision.actions.python import Python
from edgectl.provision.actions.service import Service

ACTIONS: dict[str, Action] = {
    action.name: action
    for action in (
        Apt(),
        Pip(),
        File(),
        Template(),
        Directory(),
        CommandAction(),
        Service(),
        Python(),
        Clock(),
    )
}

__all__ = ["ACTIONS", "Action"]
