#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0' }
# Checks the real lab (tests/Lab/OdaKvmLab.psm1) provides what the backup tests rely on.
# Needs root, Debian 12 and apt access on first run; Initialize-Lab takes ~1-2 min from nothing, ~15 s after.
#   dotnet pwsh -NoProfile -c "Invoke-Pester ./tests/Pester/Lab.Tests.ps1 -Output Detailed"

BeforeAll {
    Set-StrictMode -Version Latest
    $ErrorActionPreference = 'Stop'
    Import-Module (Join-Path $PSScriptRoot '../Lab/OdaKvmLab.psm1') -Force
    Initialize-Lab -VmName linux_vm
    $script:Vm = 'linux_vm'
    $script:Boot = Get-LabDiskPath -Name $Vm -Disk boot
    $script:Data = Get-LabDiskPath -Name $Vm -Disk data

    function Get-ImageInfo([string]$Path) {
        $env:LC_ALL = 'C'
        $json = & qemu-img info -U --output=json $Path
        if ($LASTEXITCODE -ne 0) { throw "qemu-img info $Path failed with exit code $LASTEXITCODE" }
        ($json -join "`n") | ConvertFrom-Json
    }
    function Get-GuestTickLines {
        $r = Invoke-LabGuestCommand -DomainName $Vm -Command 'wc -l < /mnt/a/ticks.log'
        if ($r.ExitCode -ne 0) { throw "wc in the guest failed: $($r.StdErr)" }
        [int]$r.StdOut.Trim()
    }
}

Describe 'OdaKvmLab' -Tag 'Lab' {
    It 'has linux_vm running' {
        (Invoke-LabVirsh -ArgumentList @('domstate', $Vm)).StdOut.Trim() | Should -Be 'running'
    }

    It 'lists the two ODA-like disks in domblklist' {
        $out = (Invoke-LabVirsh -ArgumentList @('domblklist', $Vm)).StdOut
        # rows are '<target> <source>' with content-dependent column widths; the source may contain spaces
        $disks = @{}
        foreach ($line in $out -split "`n") { if ($line -match '^\s*(vd[a-z])\s+(\S.*?)\s*$') { $disks[$Matches[1]] = $Matches[2] } }
        $disks.Count | Should -Be 2
        $disks['vda'] | Should -Be $Boot
        $disks['vdb'] | Should -Be $Data
        $Boot | Should -BeLike '*/sharedrepo/vmstore/.ACFS/snaps/vm_linux_vm/linux_boot'
        $Data | Should -BeLike '*/sharedrepo/vmstore/.ACFS/snaps/vdisk_disco_secundario_linux_vm/disco_secundario'
    }

    It 'has a qcow2 boot disk without file extension' {
        [System.IO.Path]::GetExtension($Boot) | Should -BeNullOrEmpty
        (Get-ImageInfo $Boot).format | Should -Be 'qcow2'
    }

    It 'has a raw data disk' {
        $info = Get-ImageInfo $Data
        $info.format | Should -Be 'raw'
        $info.'virtual-size' | Should -Be 64MB
    }

    It 'has a fully allocated raw data disk' {
        $s = (& stat -c '%b %B %s' $Data) -split '\s+'
        $LASTEXITCODE | Should -Be 0
        ([long]$s[0] * [long]$s[1]) | Should -BeGreaterOrEqual ([long]$s[2])
        [long]$s[2] | Should -Be 64MB
    }

    It 'answers guest-ping' {
        (Invoke-LabVirsh -ArgumentList @('qemu-agent-command', $Vm, '{"execute":"guest-ping"}')).StdOut.Trim() | Should -Be '{"return":{}}'
    }

    It 'runs guest commands with stdout, stderr and exit code' {
        $r = Invoke-LabGuestCommand -DomainName $Vm -Command 'echo "it''s \"quoted\" \\ $((1+1))"; echo oops >&2; exit 3'
        $r.ExitCode | Should -Be 3
        $r.StdOut | Should -Be "it's `"quoted`" \ 2`n"
        $r.StdErr | Should -Be "oops`n"
    }

    It 'has both disks mounted in the guest' {
        $r = Invoke-LabGuestCommand -DomainName $Vm -Command 'cat /proc/mounts'
        $r.StdOut | Should -Match '(?m)^/dev/vda /mnt/a ext4 '
        $r.StdOut | Should -Match '(?m)^/dev/vdb /mnt/b ext4 '
    }

    It 'keeps appending to ticks.log (guest writes)' {
        $before = Get-GuestTickLines
        Start-Sleep -Seconds 2
        $after = Get-GuestTickLines
        $after | Should -BeGreaterThan $before
    }

    It 'reads ticks.log from the live boot image on the host' {
        Get-LabImageTickCount -Path $Boot | Should -BeGreaterThan 0
    }

    It 'takes the agent down with Stop-LabGuestAgent and gets it back' {
        $sw = [System.Diagnostics.Stopwatch]::StartNew()
        Stop-LabGuestAgent -DomainName $Vm -Seconds 8
        $r = Invoke-LabVirsh -ArgumentList @('qemu-agent-command', $Vm, '{"execute":"guest-ping"}') -AllowFailure
        $r.ExitCode | Should -Be 1
        $r.StdErr | Should -Match 'not connected'
        Wait-LabGuestAgent -DomainName $Vm -TimeoutSeconds 20 | Should -BeLessThan 20
        $sw.Elapsed.TotalSeconds | Should -BeGreaterOrEqual 7
    }
}
