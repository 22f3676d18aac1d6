# A way back (issue 7), on the real libvirt + QEMU lab: list, test, boot-test, restore and prune backup sets.
# Only VMs named lab_restore* (and the copies and boot tests named from them) are created, and all are removed at
# the end. Sets on an SSH server are listed, tested and restored in SshDestination.Tests.ps1.
BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    $script:Vm = 'lab_restore'
    $script:Copy = 'lab_restore_copy'
    Initialize-Lab -VmName $Vm   # fresh disks, started, agent answering; throws (failing every test) when the lab cannot start

    # A child of this same pwsh (its pwsh.dll, run by dotnet, when the tool package has no executable).
    $script:Pwsh = @(if (Test-Path (Join-Path $PSHOME 'pwsh')) { Join-Path $PSHOME 'pwsh' } else { 'dotnet'; Join-Path $PSHOME 'pwsh.dll' })
    function Get-DomainNames { @((Invoke-Virsh @('list', '--all', '--name')).StdOut -split "`n" | ForEach-Object Trim | Where-Object { $_ }) }
    function Get-BootTestLeftovers {
        @(Get-DomainNames | Where-Object { $_ -like "$Vm-boottest-*" }) +
        @(if (Test-Path (Join-Path $env:ODAKVMBACKUP_STATE_DIR 'boot-tests')) { Get-ChildItem -Force (Join-Path $env:ODAKVMBACKUP_STATE_DIR 'boot-tests') | ForEach-Object FullName })
    }
    function Get-DomainId([string] $Name) { (Invoke-Virsh @('domid', $Name)).StdOut.Trim() }
    function Get-GuestTicks([string] $Name) {
        $r = Invoke-LabGuestCommand -DomainName $Name -Command 'wc -l < /mnt/a/ticks.log'
        [int]$r.StdOut.Trim()
    }
    # What a copy is on storage: its mtime, ctime and SHA-256. A copy that was written to, even with the same bytes, changes.
    function Get-FileState([string] $Path) {
        $item = Get-Item -LiteralPath $Path
        '{0}|{1}|{2}' -f $item.LastWriteTimeUtc.Ticks, (& stat -c '%Z' $Path), (Get-FileHash -LiteralPath $Path -Algorithm SHA256).Hash
    }
    function Copy-Set([string] $From, [string] $ToDestination, [string] $RunId, [datetime] $StartedUtc, [string] $Status) {
        $folder = Join-Path $ToDestination "$Vm/$RunId"
        New-Item -ItemType Directory -Force -Path $folder | Out-Null
        Get-ChildItem -LiteralPath $From -File | Where-Object Name -ne 'backup.json' | ForEach-Object { & cp --sparse=always $_.FullName (Join-Path $folder $_.Name) }
        $manifest = Get-Content -Raw (Join-Path $From 'backup.json') | ConvertFrom-Json
        $manifest.RunId = $RunId
        $manifest.StartedUtc = $StartedUtc.ToString('o')
        $manifest.Status = $Status
        if ($Status -ne 'Complete') { $manifest.CompletedUtc = $null; $manifest.Reason = 'made Incomplete by the test' }
        $manifest | ConvertTo-Json -Depth 10 | Set-Content -LiteralPath (Join-Path $folder 'backup.json')
        $folder
    }

    $script:Backup = New-TestFolder wayback-backup
    $script:Retention = New-TestFolder wayback-retention
    $before = "before-$([guid]::NewGuid().ToString('N'))"
    $script:AfterMarker = "after-$([guid]::NewGuid().ToString('N'))"
    $r = Invoke-LabGuestCommand -DomainName $Vm -Command "echo $before > /mnt/a/before.txt && sync"
    if ($r.ExitCode -ne 0) { throw "marker write failed: $($r.StdErr)" }
    $script:BeforeMarker = $before
    $script:SourceId = Get-DomainId $Vm
    $script:TicksAtBackup = Get-GuestTicks $Vm
    # The README's pipeline; right after the snapshot the guest writes the 'after' marker, which the set must not hold.
    $script:BackedUp = Get-VmDisk $Vm | New-KvmDiskSnapshot |
        ForEach-Object -Begin { $written = $false } -Process {
            if (-not $written) {
                $w = Invoke-LabGuestCommand -DomainName $Vm -Command "echo $AfterMarker > /mnt/a/after.txt && sync"
                if ($w.ExitCode -ne 0) { throw "marker write failed: $($w.StdErr)" }
                $written = $true
            }
            $_
        } | Copy-VmDisk -Destination $Backup | Invoke-BlockCommit | Move-OverlayToRetention -Path $Retention
    $script:SetFolder = Join-Path $Backup "$Vm/$($BackedUp[0].RunId)"
    $script:Copies = @(Get-ChildItem -LiteralPath $SetFolder -File | Where-Object Name -notin 'backup.json', 'domain.xml' | ForEach-Object FullName)
}

AfterAll {
    foreach ($name in @(Get-DomainNames | Where-Object { $_ -like 'lab_restore*' })) {
        Invoke-Virsh @('destroy', $name) -AllowFailure | Out-Null
        Invoke-Virsh @('undefine', $name, '--snapshots-metadata') -AllowFailure | Out-Null
    }
    # The VM's disks and the files the in-place restore kept aside go too.
    foreach ($disk in 'boot', 'data') { Remove-Item -LiteralPath (Split-Path (Get-LabDiskPath -Name $Vm -Disk $disk)) -Recurse -Force -ErrorAction SilentlyContinue }
}

Describe 'Get-KvmBackup' {
    It 'lists the set with its domain, time, status, consistency, disks with sizes and location' {
        $sets = @(Get-KvmBackup -Path $Backup)
        $sets.Count | Should -Be 1
        $set = $sets[0]
        $set.PSObject.TypeNames[0] | Should -Be 'OdaKvmBackup.Core.WayBack.BackupSetInfo'
        $set.DomainName | Should -Be $Vm
        $set.RunId | Should -Be $BackedUp[0].RunId
        $set.Status | Should -Be 'Complete'
        "$($set.Consistency)" | Should -Be 'Quiesced'
        $set.Location | Should -Be $SetFolder
        ($set.Disks.Target | Sort-Object) -join ',' | Should -Be 'vda,vdb'
        ($set.Disks | Where-Object Target -eq vdb).SizeBytes | Should -Be (Get-Item (Get-LabDiskPath -Name $Vm -Disk data)).Length
        $set.DataBytes | Should -BeGreaterThan 0
        $runTime = [datetime]::ParseExact($set.RunId, 'yyyyMMdd-HHmmss', $null, 'AssumeUniversal,AdjustToUniversal')
        [math]::Abs(($set.StartedUtc - $runTime).TotalSeconds) | Should -BeLessThan 5   # the run id names the snapshot time
        $set.Time.ToUniversalTime() | Should -Be $set.StartedUtc
        # Issue 15: the first set at this destination, its copies described by digest lists, each sent and stored in full.
        $set.Format | Should -Be 'OdaKvmBackup/3'
        $set.StoredAs | Should -Be 'full'
        $set.BasedOn | Should -BeNullOrEmpty
        $set.BytesSent | Should -Be ($set.Disks | Measure-Object -Sum BytesSent).Sum
        $set.BytesSent | Should -BeGreaterOrEqual $set.DataBytes
        $set.Disks | ForEach-Object { $_.Digests | Should -Match '^[0-9a-f]{64}$'; $_.FullBecause | Should -Match 'no earlier Complete set' }
    }

    It 'shows VM, when, status, consistency and size in human units in its table view' {
        $table = Get-KvmBackup -Path $Backup | Format-Table | Out-String -Width 250
        $table | Should -Match 'VM\s+When\s+Status\s+Consistency'
        $table | Should -Match 'Size'
        $table | Should -Match "$Vm\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+Complete\s+Quiesced"
        $table | Should -Match '\d+\.\d (KiB|MiB|GiB)'
        $table | Should -Match 'Location\s+Sent\s+Stored'
        $table | Should -Match "$([regex]::Escape($SetFolder))\s+\d+\.\d (KiB|MiB|GiB)\s+full"
    }

    It 'reports a destination that does not exist as an error with an id' {
        Get-KvmBackup -Path (Join-Path $Backup 'nothing-here') -ErrorVariable errs -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        $errs[0].FullyQualifiedErrorId | Should -Be 'PathNotFound,OdaKvmBackup.Commands.GetKvmBackupCommand'
    }
}

Describe 'Restore-KvmBackup under a new name' {
    BeforeAll {
        $script:RestoreFolder = New-TestFolder wayback-restore
        $script:Restored = Get-KvmBackup -Path $Backup -DomainName $Vm -Latest | Restore-KvmBackup -Destination $RestoreFolder -NewName $Copy -Start
        Wait-LabGuestAgent -DomainName $Copy | Out-Null
    }

    It 'defines the copy on the restored files, with its own UUID, and starts it only because -Start was given' {
        $Restored.Mode | Should -Be 'NewDomain'
        $Restored.Started | Should -BeTrue
        $chain = @(Get-DiskChain $Copy)
        ($chain.Target | Sort-Object) -join ',' | Should -Be 'vda,vdb'
        foreach ($disk in $chain) {
            Split-Path $disk.Source | Should -Be $RestoreFolder
            $disk.Chain.Count | Should -Be 0
        }
        ($chain | Where-Object Target -eq vda).Format | Should -Be 'qcow2'
        ($chain | Where-Object Target -eq vdb).Format | Should -Be 'raw'
        (Invoke-Virsh @('domuuid', $Copy)).StdOut.Trim() | Should -Not -Be (Invoke-Virsh @('domuuid', $Vm)).StdOut.Trim()
        # Its network card keeps its kind, with a MAC address of its own: the two VMs can share a network.
        $mac = { param($name) @(([xml](Invoke-Virsh @('dumpxml', $name, '--inactive')).StdOut).domain.devices.interface | ForEach-Object { $_.mac.address }) }
        $sourceMacs = @(& $mac $Vm)
        $copyMacs = @(& $mac $Copy)
        $sourceMacs.Count | Should -Be 1 -Because 'the lab VM has a network card'
        $copyMacs.Count | Should -Be 1
        $copyMacs[0] | Should -Not -Be $sourceMacs[0]
    }

    It 'defines a copy without starting it when -Start is not given' {
        $idle = "$Copy-idle"
        try {
            $r = Get-KvmBackup -Path $Backup -DomainName $Vm -Latest | Restore-KvmBackup -Destination (New-TestFolder wayback-idle) -NewName $idle
            $r.Started | Should -BeFalse
            (Invoke-Virsh @('domstate', $idle)).StdOut.Trim() | Should -Be 'shut off'
        }
        finally { Invoke-Virsh @('undefine', $idle) -AllowFailure | Out-Null }
    }

    It 'names no file of the source VM anywhere in the copy''s definition' {
        $xml = (Invoke-Virsh @('dumpxml', $Copy, '--inactive')).StdOut
        foreach ($file in @((Get-LabDiskMap $Vm).Values) + (Join-Path (Get-LabRoot) "log/$Vm-console.log")) {
            $xml | Should -Not -Match ([regex]::Escape($file))
        }
    }

    It 'restores raw as raw, qcow2 as qcow2, sparse, each file verified, private (0600)' {
        foreach ($disk in $Restored.Disks) {
            $disk.Verified | Should -BeTrue
            Get-ImageFormat $disk.Path | Should -Be $disk.Format
            (& stat -c '%a' $disk.Path) | Should -Be '600'
        }
        $raw = ($Restored.Disks | Where-Object Target -eq vdb).Path
        Get-AllocatedBytes $raw | Should -BeLessThan ((Get-Item $raw).Length / 2)
    }

    It 'boots: its agent answers, the marker written before the snapshot is there and the one written after is not' {
        (Invoke-LabGuestCommand -DomainName $Copy -Command 'cat /mnt/a/before.txt').StdOut.Trim() | Should -Be $BeforeMarker
        (Invoke-LabGuestCommand -DomainName $Copy -Command 'test -e /mnt/a/after.txt; echo $?').StdOut.Trim() | Should -Be '1'
    }

    It 'left the source VM running and writing to its own disks all along' {
        Get-DomainId $Vm | Should -Be $SourceId   # the same QEMU process: never stopped or restarted
        Test-OnOwnDisks $Vm | Should -BeTrue
        (Invoke-LabGuestCommand -DomainName $Vm -Command "cat /mnt/a/after.txt").StdOut.Trim() | Should -Be $AfterMarker
        Get-GuestTicks $Vm | Should -BeGreaterThan ($TicksAtBackup + 5)
        Assert-GuestTicks $Vm   # since it booted: through the backup, the restore and the copy's boot, no hole or gap
    }

    It 'refuses a name that exists, and a folder that holds a production disk, changing nothing' {
        $other = New-TestFolder wayback-other
        Restore-KvmBackup -Path $SetFolder -Destination $other -NewName $Vm -ErrorVariable errs -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        $errs[0].FullyQualifiedErrorId | Should -Be 'DomainExists,OdaKvmBackup.Commands.RestoreKvmBackupCommand'
        @(Get-ChildItem -LiteralPath $other).Count | Should -Be 0

        $bootFolder = Split-Path (Get-LabDiskPath -Name $Vm -Disk boot)
        $before = @(Get-ChildItem -LiteralPath $bootFolder -Force | ForEach-Object Name)
        Restore-KvmBackup -Path $SetFolder -Destination $bootFolder -Force -ErrorVariable errs2 -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        $errs2[0].FullyQualifiedErrorId | Should -Be 'RestoreWouldUseProductionFile,OdaKvmBackup.Commands.RestoreKvmBackupCommand'
        @(Get-ChildItem -LiteralPath $bootFolder -Force | ForEach-Object Name) | Should -Be $before
    }

    It 'refuses the files of the restored domain, which are now in use, even with -Force' {
        Restore-KvmBackup -Path $SetFolder -Destination $RestoreFolder -Force -ErrorVariable errs -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        $errs[0].FullyQualifiedErrorId | Should -Be 'RestoreWouldUseProductionFile,OdaKvmBackup.Commands.RestoreKvmBackupCommand'
    }

    It 'restores files only into a folder; overwrites them only with -Force' {
        $files = New-TestFolder wayback-files
        $first = Restore-KvmBackup -Path $SetFolder -Destination $files
        $first.Mode | Should -Be 'Files'
        $first.DomainName | Should -BeNullOrEmpty
        Restore-KvmBackup -Path $SetFolder -Destination $files -ErrorVariable errs -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        $errs[0].FullyQualifiedErrorId | Should -Be 'RestoreTargetExists,OdaKvmBackup.Commands.RestoreKvmBackupCommand'
        $replaced = Restore-KvmBackup -Path $SetFolder -Destination $files -Force -FullyAllocated
        $replaced.Disks.Count | Should -Be 2
        # Nothing deleted even with -Force: the files that were there are kept aside.
        @($replaced.KeptAside).Count | Should -Be 2
        foreach ($kept in $replaced.KeptAside) { Test-Path -LiteralPath $kept | Should -BeTrue; $kept | Should -Match '\.before-restore-\d{8}-\d{6}$' }
        $raw = Join-Path $files 'disco_secundario'
        Get-AllocatedBytes $raw | Should -BeGreaterOrEqual (Get-Item $raw).Length   # -FullyAllocated: as ODA keeps its vdisks
        @(Get-ChildItem -LiteralPath $files -Force | Where-Object Name -like '*.partial').Count | Should -Be 0
    }

    AfterAll {
        Invoke-Virsh @('destroy', $Copy) -AllowFailure | Out-Null
        Invoke-Virsh @('undefine', $Copy) -AllowFailure | Out-Null
    }
}

Describe 'Test-KvmBackup' {
    It 'passes a good set, each copy read back and checked, and leaves the copies untouched' {
        $states = @($Copies | ForEach-Object { Get-FileState $_ })
        $result = Test-KvmBackup -Path $SetFolder -ErrorVariable errs
        $errs.Count | Should -Be 0
        $result.Passed | Should -BeTrue
        $result.Disks.Count | Should -Be 2
        ($result.Disks | Where-Object Target -eq vda).ImageCheck | Should -Be 'no errors'
        $result.Disks.DigestCheck | ForEach-Object { $_ | Should -Match '^digest list equal to backup.json' }
        @($Copies | ForEach-Object { Get-FileState $_ }) | Should -Be $states
    }

    It 'names the disk and fails, as an error a script can act on, when one byte of one copy changed' {
        $damaged = New-TestFolder wayback-damaged
        $set = Copy-Set -From $SetFolder -ToDestination $damaged -RunId $BackedUp[0].RunId -StartedUtc (Get-KvmBackup $Backup).StartedUtc -Status Complete
        $file = Join-Path $set 'disco_secundario'
        $stream = [IO.File]::Open($file, 'Open', 'ReadWrite')
        try { $stream.Position = 5MB + 3; $b = $stream.ReadByte(); $stream.Position = 5MB + 3; $stream.WriteByte(($b + 1) % 256) } finally { $stream.Dispose() }

        $result = Get-KvmBackup -Path $damaged | Test-KvmBackup -ErrorVariable errs -ErrorAction SilentlyContinue
        $result.Passed | Should -BeFalse
        ($result.Disks | Where-Object Target -eq vdb).Passed | Should -BeFalse
        ($result.Disks | Where-Object Target -eq vda).Passed | Should -BeTrue
        $errs.Count | Should -Be 1
        $errs[0].FullyQualifiedErrorId | Should -Be 'BackupCopyDamaged,OdaKvmBackup.Commands.TestKvmBackupCommand'
        $errs[0].ToString() | Should -Match "vdb in the set $Vm $($BackedUp[0].RunId)"
        $errs[0].ToString() | Should -Match 'segment 0 \(bytes 0 to 16777215\), from the 64 KiB block at byte 5242880, reads differently'
        $errs[0].TargetObject.Set.Location | Should -Be $set
    }

    It '-Boot boots the set on overlays, says how long it took, and leaves no domain, overlay or file behind; the copies stay as they were' {
        $states = @($Copies | ForEach-Object { Get-FileState $_ })
        $result = Test-KvmBackup -Path $SetFolder -Boot -BootTimeoutSec 120 -ErrorVariable errs
        $errs.Count | Should -Be 0
        $result.Passed | Should -BeTrue
        $result.BootTested | Should -BeTrue
        $result.BootResult | Should -Be 'guest agent answered guest-ping'
        $result.BootSeconds | Should -BeGreaterThan 0
        $result.BootTestDomain | Should -BeLike "$Vm-boottest-*"
        Get-BootTestLeftovers | Should -BeNullOrEmpty
        @(Get-ChildItem -LiteralPath $SetFolder | ForEach-Object Name | Sort-Object) -join ',' | Should -Be 'backup.json,disco_secundario,disco_secundario.digests,domain.xml,linux_boot,linux_boot.digests'
        @($Copies | ForEach-Object { Get-FileState $_ }) | Should -Be $states
    }

    It '-Boot cleans up also when the boot times out, and says so with an error' {
        $started = [datetime]::UtcNow.AddSeconds(-1)
        $result = Test-KvmBackup -Path $SetFolder -Boot -BootTimeoutSec 1 -ErrorVariable errs -ErrorAction SilentlyContinue
        $result.Passed | Should -BeFalse
        $result.BootResult | Should -Be 'timed out'
        $errs[0].FullyQualifiedErrorId | Should -Be 'BootTestTimedOut,OdaKvmBackup.Commands.TestKvmBackupCommand'
        # libvirt's own record that the throw-away domain existed: QEMU's log, which libvirt writes for each domain it
        # starts (its command line) and ends (how it went down). It ran, and was destroyed, not left to run.
        $result.BootTestDomain | Should -BeLike "$Vm-boottest-*"
        $qemuLog = "/var/log/libvirt/qemu/$($result.BootTestDomain).log"
        Test-Path -LiteralPath $qemuLog | Should -BeTrue -Because 'libvirt started QEMU for the boot test'
        (Get-Item -LiteralPath $qemuLog).LastWriteTimeUtc | Should -BeGreaterThan $started
        $log = Get-Content -Raw -LiteralPath $qemuLog
        $log | Should -Match "-name guest=$([regex]::Escape($result.BootTestDomain)),"
        $log | Should -Match 'shutting down, reason=destroyed'
        Get-BootTestLeftovers | Should -BeNullOrEmpty
        Get-DomainNames | Should -Not -Contain $result.BootTestDomain
    }

    It 'cleans up after a boot test whose process was killed, on the next Test-KvmBackup' {
        $script = "Import-Module '$ModuleManifest'; Test-KvmBackup -Path '$SetFolder' -Boot -BootTimeoutSec 300"
        $child = Start-Process -FilePath $Pwsh[0] -ArgumentList (@($Pwsh | Select-Object -Skip 1) + '-NoProfile', '-Command', $script) -PassThru -RedirectStandardOutput (Join-Path $env:ODAKVM_TEST_SCRATCH 'killed-boot.out')
        try {
            $deadline = (Get-Date).AddSeconds(60)
            # Killed once its throw-away VM runs (and the child waits for its agent), as a kill -9 or a reboot of the
            # admin's session would: a kill during 'virsh create' itself makes libvirtd abort that start.
            $running = { @(Invoke-Virsh @('list', '--name', '--state-running')).StdOut -split "`n" | Where-Object { $_.Trim() -like "$Vm-boottest-*" } }
            while (-not (& $running) -and (Get-Date) -lt $deadline) { Start-Sleep -Milliseconds 200 }
            & $running | Should -Not -BeNullOrEmpty
            Start-Sleep -Seconds 1
        }
        finally { & kill -KILL $child.Id; $child.WaitForExit() }
        @(Get-BootTestLeftovers).Count | Should -BeGreaterThan 0   # killed: its domain and files are still there

        $result = Test-KvmBackup -Path $SetFolder -WarningVariable warnings -WarningAction SilentlyContinue
        $result.Passed | Should -BeTrue
        ($warnings -join "`n") | Should -Match "Cleaned up after a boot test that did not finish: the boot test '$Vm-boottest-"
        Get-BootTestLeftovers | Should -BeNullOrEmpty
    }
}

Describe 'Restore-KvmBackup in place' {
    It 'is refused while the VM runs, even with -Force' {
        Restore-KvmBackup -Path $SetFolder -InPlace -Force -ErrorVariable errs -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        $errs[0].FullyQualifiedErrorId | Should -Be 'DomainNotShutOff,OdaKvmBackup.Commands.RestoreKvmBackupCommand'
        Test-OnOwnDisks $Vm | Should -BeTrue
    }

    It 'is refused without -Force, even when the VM is shut off' {
        Invoke-Virsh @('destroy', $Vm) | Out-Null
        Restore-KvmBackup -Path $SetFolder -InPlace -ErrorVariable errs -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        $errs[0].FullyQualifiedErrorId | Should -Be 'InPlaceRestoreNeedsForce,OdaKvmBackup.Commands.RestoreKvmBackupCommand'
        Get-StrayDiskFolderFiles $Vm | Should -BeNullOrEmpty
    }

    It 'puts the disks back when the VM is shut off and -Force is given, keeping the replaced files aside' {
        $disks = Get-LabDiskMap $Vm
        $result = Get-KvmBackup -Path $Backup | Restore-KvmBackup -InPlace -Force -WarningVariable warnings -WarningAction SilentlyContinue
        $result.Mode | Should -Be 'InPlace'
        $result.KeptAside.Count | Should -Be 2
        foreach ($kept in $result.KeptAside) { Test-Path -LiteralPath $kept | Should -BeTrue }
        ($warnings -join "`n") | Should -Match 'kept until you remove them'
        foreach ($disk in $result.Disks) { $disk.Path | Should -Be $disks[$disk.Target] }
        Test-OnOwnDisks $Vm | Should -BeTrue   # its definition is untouched: same files, same formats

        Invoke-Virsh @('start', $Vm) | Out-Null
        Wait-LabGuestAgent -DomainName $Vm | Out-Null
        (Invoke-LabGuestCommand -DomainName $Vm -Command 'cat /mnt/a/before.txt').StdOut.Trim() | Should -Be $BeforeMarker
        (Invoke-LabGuestCommand -DomainName $Vm -Command 'test -e /mnt/a/after.txt; echo $?').StdOut.Trim() | Should -Be '1'
    }
}

Describe 'Remove-KvmBackup' {
    BeforeAll {
        # Five sets of the VM, days apart (the third Incomplete), made from the real set's files and manifest.
        $script:Pool = New-TestFolder wayback-pool
        $now = [datetime]::UtcNow
        $script:Runs = foreach ($i in 5..1) {
            $t = $now.AddDays(-$i)
            [pscustomobject]@{ RunId = $t.ToString('yyyyMMdd-HHmmss'); Started = $t; Status = $(if ($i -eq 3) { 'Incomplete' } else { 'Complete' }) }
        }
        foreach ($run in $Runs) { Copy-Set -From $SetFolder -ToDestination $Pool -RunId $run.RunId -StartedUtc $run.Started -Status $run.Status | Out-Null }
        function Get-PoolRuns { @(Get-ChildItem -LiteralPath (Join-Path $Pool $Vm) -Directory | ForEach-Object Name | Sort-Object) }
    }

    It 'lists the five sets; -Latest and -Status filter them' {
        @(Get-KvmBackup $Pool).Count | Should -Be 5
        @(Get-KvmBackup $Pool -Status Incomplete).RunId | Should -Be $Runs[2].RunId
        @(Get-KvmBackup $Pool -Latest).RunId | Should -Be $Runs[4].RunId
        @(Get-KvmBackup $Pool -DomainName 'lab_rest*' -Status Complete).Count | Should -Be 4
    }

    It '-WhatIf says what would go and why, and removes nothing' {
        $out = & $Pwsh[0] @($Pwsh | Select-Object -Skip 1) -NoProfile -Command "Import-Module '$ModuleManifest'; Remove-KvmBackup -Path '$Pool' -KeepLast 2 -WhatIf" 2>&1 | Out-String
        foreach ($gone in $Runs[0], $Runs[1], $Runs[2]) { $out | Should -Match ([regex]::Escape("$Pool/$Vm/$($gone.RunId)")) }
        foreach ($kept in $Runs[3], $Runs[4]) { $out | Should -Not -Match ([regex]::Escape($kept.RunId)) }
        $out | Should -Match 'Incomplete \(cannot be restored from\)'
        $out | Should -Match 'beyond -KeepLast 2'
        (Get-PoolRuns) -join ',' | Should -Be (($Runs.RunId | Sort-Object) -join ',')
    }

    It '-KeepLast 2 keeps exactly the two newest Complete sets' {
        $removed = Remove-KvmBackup -Path $Pool -KeepLast 2 -Confirm:$false -PassThru
        ($removed.RunId | Sort-Object) -join ',' | Should -Be (($Runs[0..2].RunId | Sort-Object) -join ',')
        (Get-PoolRuns) -join ',' | Should -Be (($Runs[3..4].RunId | Sort-Object) -join ',')
    }

    It 'keeps the newest Complete set when a policy would remove every Complete set; outputs only with -PassThru, says it with -Verbose' {
        $newest = [datetime]::UtcNow.AddMinutes(-5)
        Copy-Set -From $SetFolder -ToDestination $Pool -RunId $newest.ToString('yyyyMMdd-HHmmss') -StartedUtc $newest -Status Incomplete | Out-Null
        $quiet = Remove-KvmBackup -Path $Pool -DomainName $Vm -KeepLast 2 -Confirm:$false -Verbose 4>&1   # the Incomplete set only
        @($quiet | Where-Object { $_ -isnot [System.Management.Automation.VerboseRecord] }) | Should -BeNullOrEmpty -Because 'a Remove- cmdlet outputs nothing without -PassThru'
        @($quiet | Where-Object { $_.Message -like "Removed $Pool/$Vm/*Incomplete*" }).Count | Should -Be 1
        Copy-Set -From $SetFolder -ToDestination $Pool -RunId $newest.ToString('yyyyMMdd-HHmmss') -StartedUtc $newest -Status Incomplete | Out-Null
        $removed = Remove-KvmBackup -Path $Pool -KeepLast 0 -KeepDays 0 -Confirm:$false -PassThru
        @($removed).Count | Should -Be 2
        (Get-PoolRuns) -join ',' | Should -Be $Runs[4].RunId
    }

    It 'refuses to remove the newest Complete set even when it is piped in by name' {
        Get-KvmBackup $Pool | Remove-KvmBackup -Confirm:$false -ErrorVariable errs -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        $errs[0].FullyQualifiedErrorId | Should -Be 'NewestCompleteSetKept,OdaKvmBackup.Commands.RemoveKvmBackupCommand'
        (Get-PoolRuns) -join ',' | Should -Be $Runs[4].RunId
    }

    It 'removes retained overlays by age, keeping the young ones' {
        $old = Join-Path $Retention "$Vm/$([datetime]::UtcNow.AddDays(-30).ToString('yyyyMMdd-HHmmss'))"
        New-Item -ItemType Directory -Force -Path $old | Out-Null
        Set-Content -LiteralPath (Join-Path $old 'linux_boot.FILE_STAGE_BACKUP.TEMP') -Value 'old overlay'
        $young = Join-Path $Retention "$Vm/$($BackedUp[0].RunId)"
        $removed = Remove-KvmBackup -DomainName $Vm -RetentionPath $Retention -OverlayKeepDays 7 -Confirm:$false -PassThru
        @($removed).Count | Should -Be 1
        $removed.Kind | Should -Be 'RetainedOverlays'
        $removed.Reason | Should -Match 'older than -OverlayKeepDays 7'
        Test-Path -LiteralPath $old | Should -BeFalse
        @(Get-ChildItem -LiteralPath $young -File).Count | Should -Be 2
    }
}
