# The checks that the fault and backup tests rely on (tests/Pester/ProofHelpers.ps1 and Assert-GuestTicks in
# TestHelpers.ps1) fail when what they check is not so, on the real lab: a record missing or damaged on a disk, a
# fault window in which the guest could not write, a hole or a gap in the guest's ticks.
BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    Initialize-Lab -VmName linux_vm
    Reset-LabVmIfNeeded linux_vm
    # These tests leave holes and gaps in the guest's files on purpose: the VM is made anew after them.
    function Invoke-Guest([string] $Command) {
        $r = Invoke-LabGuestCommand -DomainName linux_vm -Command $Command
        if ($r.ExitCode -ne 0) { throw "guest command failed: $($r.StdErr)" }
    }
}
AfterAll { Reset-LabVm -Name linux_vm }

Describe 'The guest writer''s read-back' {
    It 'reads back every write reported done, and counts those made wholly inside the window' {
        $writer = Start-GuestWriter linux_vm 'proof-good'
        Open-FaultWindow $writer
        Start-Sleep -Seconds 3
        Close-FaultWindow $writer
        $summary = Assert-GuestWrites $writer
        $summary.ReadBack | Should -Be $summary.Acked
        $summary.Places | Should -Be 4
        $summary.InWindow | Should -BeGreaterThan 0
        $summary.InWindow | Should -BeLessThan $summary.Acked -Because 'the writer wrote before the window opened too'
    }

    It 'names a record missing from one disk and a record damaged on the other' {
        $writer = Start-GuestWriter linux_vm 'proof-bad'
        Wait-Until { @((Get-GuestWriterLog $writer).Acked).Count -ge 6 } 'six records written' 60
        Stop-GuestWriter $writer
        # Record 3 goes from the data disk's file; record 5 on the boot disk gets one more digit in its random field.
        Invoke-Guest "sed -i '3d' $($writer.GuestFiles[1]) && awk 'NR==5 { `$3 = `$3 `"1`" } { print }' $($writer.GuestFiles[0]) > /mnt/a/t && mv /mnt/a/t $($writer.GuestFiles[0]) && sync"
        $failure = { Assert-GuestWrites $writer -NoWindow } | Should -Throw -PassThru
        $message = $failure.Exception.Message
        $message | Should -Match "are not in $([regex]::Escape($writer.GuestFiles[1])) read by the guest: 3\b"
        $message | Should -Match "are not in $([regex]::Escape($writer.ImageFile)) in the image $([regex]::Escape((Get-LabDiskPath -Name linux_vm -Disk data))): 3\b"
        $message | Should -Match "line 5 of $([regex]::Escape($writer.GuestFiles[0])) read by the guest is damaged"
        $message | Should -Match "line 5 of $([regex]::Escape($writer.ImageFile)) in the image $([regex]::Escape((Get-LabDiskPath -Name linux_vm -Disk boot))) is damaged"
    }

    It 'counts no write in a window in which the guest could not write, and fails for it' {
        $writer = Start-GuestWriter linux_vm 'proof-frozen'
        Invoke-Virsh @('domfsfreeze', 'linux_vm') | Out-Null
        try {
            Open-FaultWindow $writer
            Start-Sleep -Seconds 3
            Close-FaultWindow $writer
        }
        finally { Invoke-Virsh @('domfsthaw', 'linux_vm') | Out-Null }
        { Assert-GuestWrites $writer } | Should -Throw -ExpectedMessage '*must have written while the fault was in effect*'
        $writer.Summary.InWindow | Should -Be 0
        $writer.Summary.ReadBack | Should -Be $writer.Summary.Acked -Because 'the writes made before and after are all there'
    }
}

Describe 'The check of the guest''s ticks' {
    BeforeEach { Assert-GuestTicks linux_vm }

    It 'fails naming the gap when the guest wrote no tick for longer than the limit' {
        Invoke-Virsh @('domfsfreeze', 'linux_vm') | Out-Null
        try { Start-Sleep -Seconds ($TickGapLimitSeconds + 2) }
        finally { Invoke-Virsh @('domfsthaw', 'linux_vm') | Out-Null }
        Start-Sleep -Seconds 2
        { Assert-GuestTicks linux_vm } | Should -Throw -ExpectedMessage "*wrote no tick for * s (limit $TickGapLimitSeconds s), between tick *"
    }

    It 'fails naming the ticks missing from the disk' {
        Start-Sleep -Seconds 3
        # Two ticks written since the last check go from the file, as a lost write would take them.
        Invoke-Guest 'n=$(wc -l < /mnt/a/ticks.log); sed -i "$((n - 2)),$((n - 1))d" /mnt/a/ticks.log && sync'
        { Assert-GuestTicks linux_vm } | Should -Throw -ExpectedMessage '*ticks * are missing from ticks.log on *'
    }
}
