# The nightly job as cron runs it: pwsh -File on the script shipped with the module, on the real lab.
BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    Initialize-Lab -VmName linux_vm
    Reset-LabVmIfNeeded linux_vm
    $script:Script = Join-Path (Split-Path $ModuleManifest) 'Scripts/Invoke-KvmNightlyBackup.ps1'
    $script:Pwsh = @([Environment]::ProcessPath, [Environment]::GetCommandLineArgs()[0])
    $script:Destination = New-TestFolder nightly-dest
    $script:Retention = New-TestFolder nightly-ret

    function Invoke-Nightly([string[]] $Arguments, [string] $Module = $ModuleManifest) {
        $out = & $Pwsh[0] $Pwsh[1] -NoProfile -NonInteractive -File $Script -Module $Module -Destination $Destination -RetentionPath $Retention @Arguments 2>&1 | Out-String
        [pscustomobject]@{ ExitCode = $LASTEXITCODE; Output = $out }
    }
    function Get-Sets { @(Get-ChildItem -Directory (Join-Path $Destination 'linux_vm') -ErrorAction SilentlyContinue | Where-Object Name -Match '^\d{8}-\d{6}$') }
}

Describe 'Invoke-KvmNightlyBackup.ps1' {
    AfterEach { Assert-GuestTicks linux_vm }
    It 'backs up, keeps -KeepLast sets, and exits 0 when every VM was backed up' {
        foreach ($round in 1..3) {
            $r = Invoke-Nightly @('-DomainName', 'linux_vm', '-KeepLast', '2', '-TestLatest')
            $r.ExitCode | Should -Be 0 -Because $r.Output
            Start-Sleep -Seconds 1   # one run id per second
        }
        $sets = Get-Sets
        $sets.Count | Should -Be 2 -Because 'three runs, -KeepLast 2'
        foreach ($set in $sets) { (Get-Content -Raw (Join-Path $set.FullName 'backup.json') | ConvertFrom-Json).Status | Should -Be 'Complete' }
        $r.Output | Should -Match 'Backed up: linux_vm'
        $r.Output | Should -Match 'Failed:\s+none'
        Test-OnOwnDisks linux_vm | Should -BeTrue
    }

    It 'writes its log next to the backups, private, and exits 1 naming the VM that failed while the others are backed up' {
        $before = (Get-Sets).Count
        $r = Invoke-Nightly @('-DomainName', 'linux_vm,no_such_vm', '-KeepLast', '5')   # as cron passes a list
        $r.ExitCode | Should -Be 1 -Because $r.Output
        (Get-Sets).Count | Should -Be ($before + 1) -Because 'linux_vm was backed up all the same'
        $logs = @(Get-ChildItem (Join-Path $Destination '.odakvmbackup-logs') -Filter 'nightly-*.log' | Sort-Object LastWriteTime)
        $logs.Count | Should -BeGreaterThan 0
        $log = Get-Content -Raw $logs[-1].FullName
        $log | Should -Match 'Failed:\s+no_such_vm'
        $log | Should -Match 'no_such_vm \(backup, DomainNotFound\)'
        $log | Should -Match 'Backed up: linux_vm'
        (& stat -c '%a' -- $logs[-1].FullName).Trim() | Should -Be '600'
        (& stat -c '%a' -- (Join-Path $Destination '.odakvmbackup-logs')).Trim() | Should -Be '700'
    }

    It 'exits 1 naming the VM whose copy failed half way, with that VM back on its own disks and the others backed up' {
        Initialize-Lab -VmName linux_vm2
        Reset-LabVmIfNeeded linux_vm2
        # linux_vm2's sets land on a file system too small for them (4 MiB, and its data disk holds 8 MiB more than
        # that): its copy fails mid-run, not before the snapshot.
        $r = Invoke-LabGuestCommand -DomainName linux_vm2 -Command 'dd if=/dev/urandom of=/mnt/b/fill bs=1M count=8 conv=fsync 2>/dev/null'
        $r.ExitCode | Should -Be 0
        $small = New-Item -ItemType Directory -Force (Join-Path $Destination 'linux_vm2')
        # mode=0700: a tmpfs root is 1777 by default, which the module refuses as a folder others could write.
        & mount -t tmpfs -o size=4m,mode=0700 tmpfs $small.FullName
        if ($LASTEXITCODE) { throw "cannot mount a tmpfs at $small" }
        try {
            $before = @(Get-Sets).Count
            $r = Invoke-Nightly @('-DomainName', 'linux_vm2,linux_vm', '-KeepLast', '5', '-KeepDays', '1')   # -KeepDays keeps the Incomplete set
            $r.ExitCode | Should -Be 1 -Because $r.Output
            $r.Output | Should -Match 'Failed:\s+linux_vm2'
            $r.Output | Should -Match 'linux_vm2 \(backup, DestinationFull\)'
            $r.Output | Should -Match 'Backed up: linux_vm\b'
            @(Get-Sets).Count | Should -Be ($before + 1) -Because 'linux_vm, after the one that failed, was backed up all the same'
            (Get-Content -Raw (Join-Path (Get-ChildItem -Directory $small.FullName)[0].FullName 'backup.json') | ConvertFrom-Json).Status | Should -Be 'Incomplete'
            foreach ($vm in 'linux_vm', 'linux_vm2') {
                Test-OnOwnDisks $vm | Should -BeTrue
                Get-StrayDiskFolderFiles $vm | Should -BeNullOrEmpty
            }
        }
        finally { & umount $small.FullName }
        Assert-GuestTicks linux_vm2
    }

    It 'exits 2 when it cannot start, and says why' {
        $r = Invoke-Nightly @('-DomainName', 'linux_vm') -Module '/nonexistent/OdaKvmBackup.psd1'
        $r.ExitCode | Should -Be 2
        $r.Output | Should -Match 'could not start'
    }
}
