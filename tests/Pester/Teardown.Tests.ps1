# The lab tears down cleanly and comes back (runs last: Pester takes the files in name order).
BeforeAll {
    Set-StrictMode -Version Latest
    Import-Module (Join-Path $PSScriptRoot '../Lab/OdaKvmLab.psm1') -Force
    $script:root = Get-LabRoot
    # Processes still running: a killed one may linger as a zombie until PID 1 reaps it, which is not running.
    function Get-LiveProcessCount([string] $Name) {
        @(Get-Process -Name $Name -ErrorAction SilentlyContinue | Where-Object {
            -not ((Get-Content -Raw "/proc/$($_.Id)/status" -ErrorAction SilentlyContinue) -match 'State:\s+Z')
        }).Count
    }
}

Describe 'Remove-Lab' {
    It 'stops every lab VM and libvirtd and removes their state, keeping only the downloaded packages' {
        Initialize-Lab -VmName linux_vm
        Remove-Lab
        Get-LiveProcessCount 'qemu-system-x86*' | Should -Be 0
        Get-LiveProcessCount libvirtd | Should -Be 0
        foreach ($folder in '/run/libvirt', '/var/lib/libvirt', '/etc/libvirt/qemu') { Test-Path $folder | Should -BeFalse -Because "$folder is libvirt's state" }
        @(Get-ChildItem -LiteralPath $root -Force | ForEach-Object Name) | Should -Be @('debs')
    }

    It 'leaves a host on which Initialize-Lab brings the lab back' {
        Initialize-Lab -VmName linux_vm
        (Invoke-LabVirsh -ArgumentList @('domstate', 'linux_vm')).StdOut.Trim() | Should -Be 'running'
        (Invoke-LabGuestCommand -DomainName linux_vm -Command 'echo up').StdOut.Trim() | Should -Be 'up'
    }
}
