# Fault injection on the real lab (issue: a backup never leaves a VM on its overlays). Each fault ends with the
# same checks (Assert-Recovered): every disk on its own file, no metadata, no stray overlay, no journal, the
# guest's writes made during the backup in its disks, clean file systems, and a next backup that succeeds.
BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    . (Join-Path $PSScriptRoot 'FaultHelpers.ps1')
    Initialize-Lab -VmName $FaultVm, linux_vm2
    Reset-LabVmIfNeeded $FaultVm
}
AfterAll { Save-FaultRows 'Faults' }

Describe 'Faults injected on the real lab' {
    # Each fault starts from a VM in good order, so that one failing test cannot spoil the ones after it.
    BeforeEach { Reset-LabVmIfNeeded $FaultVm }

    Describe 'The pipeline stopped as Ctrl+C does' {
        It 'puts the VM back on its own disks before returning, when stopped <Point>' -ForEach @(
            @{ Point = 'AfterSnapshot' }, @{ Point = 'DuringCopy' }, @{ Point = 'DuringCommit' }
        ) {
            $run = New-FaultRun "stop-$Point"
            $stopFile = Join-Path $run.Folder 'stop-now'
            $process = Start-BackupProcess (New-BackupScript -Point $Point -Destination $run.Destination -Retention $run.Retention -Signal $run.Signal -Marker $run.Marker) $run.Folder -StopFile $stopFile
            Wait-FaultPoint $Point $run.Signal $run.Destination
            Write-WindowMarker $run
            New-Item -ItemType File -Path $stopFile | Out-Null
            $process.WaitForExit(300000) | Should -BeTrue
            Close-FaultWindow $run.Writer
            # What virsh showed right after Stop() returned: the VM was already back on its own files.
            $stdout = Get-Content -Raw (Join-Path $run.Folder 'stdout.txt')
            $afterStop = ($stdout -split 'AFTER-STOP')[1]
            $afterStop | Should -Match ([regex]::Escape((Get-LabDiskPath -Name $FaultVm -Disk boot)) + '\s')
            $afterStop | Should -Not -Match $SnapshotName
            Get-Content -Raw (Join-Path $run.Folder 'stderr.txt') | Should -Match "pipeline stopped before the backup finished, '$FaultVm' was put back on its own disks"
            if ($Point -eq 'DuringCopy') { Get-SetStatus $run.Destination | Should -Be 'Incomplete' }
            Get-ChildItem -Recurse -Filter '*.partial' -Path $run.Destination | Should -BeNullOrEmpty
            Assert-Recovered "pipeline stopped $Point" $run
        }
    }

    Describe 'The pipeline stopped while snapshot-create-as waits for the guest' {
        AfterEach { $null = Invoke-LabGuestCommand -DomainName $FaultVm -Command 'rm -f /run/slow-freeze' }

        It 'leaves the VM on its own disks with no metadata and no overlay, says so, and the next backup just works' {
            $run = New-FaultRun 'stop-during-snapshot'
            $stopFile = Join-Path $run.Folder 'stop-now'
            # The writes are made before the backup: during the freeze the guest cannot write.
            $r = Invoke-LabGuestCommand -DomainName $FaultVm -Command "$($DuringWrites -creplace '@MARKER@', $run.Marker); echo 6 > /run/slow-freeze"
            $r.ExitCode | Should -Be 0
            $process = Start-BackupProcess (New-BackupScript -Point None -Destination $run.Destination -Retention $run.Retention -Signal $run.Signal -Marker $run.Marker) $run.Folder -StopFile $stopFile
            Wait-Until { & pgrep -f "snapshot-create-as --domain $FaultVm" } 'virsh snapshot-create-as waiting for the slow freeze'
            # The journal said what was going on before the call returned.
            (Get-Content -Raw $JournalFile | ConvertFrom-Json).Phase | Should -Be 'Snapshotting'
            $folders = (Get-LabDiskMap $FaultVm).Values | ForEach-Object { Split-Path $_ } | Sort-Object -Unique
            Open-FaultWindow $run.Writer
            New-Item -ItemType File -Path $stopFile | Out-Null
            # libvirtd finishes the snapshot after the stop: its overlays appear beside the disks, and the rollback
            # must take them away again (seen here, or this test would prove nothing about a snapshot undone).
            $overlaysSeen = @()
            $watch = [Diagnostics.Stopwatch]::StartNew()
            while (-not $process.HasExited -and $watch.Elapsed.TotalSeconds -lt 300) {
                $overlaysSeen += @(Get-ChildItem -LiteralPath $folders -File -Filter "*.$SnapshotName" -ErrorAction SilentlyContinue | ForEach-Object Name)
                Start-Sleep -Milliseconds 50
            }
            $process.WaitForExit(300000) | Should -BeTrue
            Close-FaultWindow $run.Writer
            ($overlaysSeen | Sort-Object -Unique) | Should -Be @("disco_secundario.$SnapshotName", "linux_boot.$SnapshotName") -Because 'libvirt took the snapshot after the stop'
            $afterStop = ((Get-Content -Raw (Join-Path $run.Folder 'stdout.txt')) -split 'AFTER-STOP')[1]
            $afterStop | Should -Match ([regex]::Escape((Get-LabDiskPath -Name $FaultVm -Disk boot)) + '\s')
            $afterStop | Should -Not -Match $SnapshotName
            Get-Content -Raw (Join-Path $run.Folder 'stderr.txt') | Should -Match "pipeline stopped before the backup finished, '$FaultVm' was put back on its own disks"
            Assert-Recovered 'pipeline stopped during snapshot-create-as' $run -NoWindowMarker
        }
    }

    Describe 'libvirtd hung (SIGSTOP) after the snapshot' {
        It 'turns the hang into CommandTimedOut within the time limit, says the VM still writes to its overlays, and Repair-KvmBackup puts it back once libvirtd answers' {
            $run = New-FaultRun 'libvirtd-hung'
            $limit = 6
            $daemon = [int](Get-Content (Join-Path (Get-LabRoot) 'run/libvirtd.pid')).Trim()
            $ids = Join-Path $run.Folder 'error-ids.txt'
            $stderrFile = Join-Path $run.Folder 'stderr.txt'
            # The backup, every tool call limited to $limit s; at its end the child lists the id of each error it met.
            $backup = New-BackupScript -Point DuringCopy -Destination $run.Destination -Retention $run.Retention -Signal $run.Signal -Marker $run.Marker
            $script = "`$env:ODAKVMBACKUP_TOOL_TIMEOUT_SEC = '$limit'`ntry {`n$backup`n}`nfinally { @(`$Error) | ForEach-Object { `$_.FullyQualifiedErrorId } | Set-Content -Path '$ids' }"
            $process = Start-BackupProcess $script $run.Folder
            try {
                Wait-FaultPoint DuringCopy $run.Signal $run.Destination
                Write-WindowMarker $run
                & kill -STOP $daemon
                # From now on every call to libvirtd hangs. The limit runs from the module's first call to it (the
                # first virsh it starts) to the error on its stderr.
                $clock = [Diagnostics.Stopwatch]::StartNew()
                $callAt = $null
                $errorAt = $null
                while (-not $process.HasExited -and $clock.Elapsed.TotalSeconds -lt 180) {
                    if ($null -eq $callAt -and @(& pgrep -P $process.Id -x virsh).Count) { $callAt = $clock.Elapsed.TotalSeconds }
                    if ($null -eq $errorAt -and (Get-Content -Raw -LiteralPath $stderrFile) -match 'FullyQualifiedErrorId\s*:\s*CommandTimedOut,') { $errorAt = $clock.Elapsed.TotalSeconds }
                    Start-Sleep -Milliseconds 100
                }
                $process.WaitForExit(1000) | Should -BeTrue -Because 'every virsh call is bounded'
            }
            finally { & kill -CONT $daemon }
            $callAt | Should -Not -BeNullOrEmpty -Because 'the module called libvirtd while it hung'
            $errorAt | Should -Not -BeNullOrEmpty -Because 'the hang must end in CommandTimedOut'
            Set-FaultRowError $run.Row 'CommandTimedOut' ($errorAt - $callAt) "$limit s a call (ODAKVMBACKUP_TOOL_TIMEOUT_SEC); measured from the module's first call to the hung libvirtd"
            # The limit, plus 2 s: the 100 ms polls above, killing virsh, and pwsh writing the error.
            ($errorAt - $callAt) | Should -BeGreaterOrEqual ($limit - 0.5) -Because 'the call is stopped at its limit, not before'
            ($errorAt - $callAt) | Should -BeLessOrEqual ($limit + 2)
            $errorIds = @(Get-Content -LiteralPath $ids)
            $errorIds | Should -Contain 'CommandTimedOut,OdaKvmBackup.Commands.InvokeBlockCommitCommand'
            # What became of the VM, as the error says: its disks still write to their overlays, for Repair-KvmBackup.
            $stderr = (Get-Content -Raw -LiteralPath $stderrFile) -replace '\s+', ' '
            $stderr | Should -Match "did not finish within $limit s and was stopped: libvirtd, QEMU or the guest agent may be hung"
            $stderr | Should -Match "'$FaultVm' still writes to the overlay .*Repair-KvmBackup"
            Test-OnOwnDisks $FaultVm | Should -BeFalse -Because 'the commit could not run while libvirtd hung'
            $actions = Repair-KvmBackup -DomainName $FaultVm -Confirm:$false -ErrorVariable repairErrors
            Close-FaultWindow $run.Writer
            $repairErrors | Should -BeNullOrEmpty
            ($actions.Result -join "`n") | Should -Match 'journal closed'
            Assert-Recovered 'libvirtd hung (SIGSTOP), then Repair' $run
        }
    }

    Describe 'pwsh killed with SIGKILL, then Repair-KvmBackup' {
        It 'recovers a VM left on its overlays when killed <Point>' -ForEach @(
            @{ Point = 'AfterSnapshot' }, @{ Point = 'DuringCopy' }, @{ Point = 'DuringCommit' }
        ) {
            $run = New-FaultRun "kill-$Point"
            $process = Start-BackupProcess (New-BackupScript -Point $Point -Destination $run.Destination -Retention $run.Retention -Signal $run.Signal -Marker $run.Marker) $run.Folder
            Wait-FaultPoint $Point $run.Signal $run.Destination
            Write-WindowMarker $run
            if ($Point -eq 'DuringCommit') { Test-BlockJobRunning $FaultVm | Should -BeTrue -Because 'the fault must hit a running commit' }
            Stop-ProcessTree $process.Id
            $process.WaitForExit()
            Test-Path $JournalFile | Should -BeTrue -Because 'the journal records the run in flight'
            Test-OnOwnDisks $FaultVm | Should -BeFalse -Because 'nothing was left to finish the run'
            # A new backup refuses, and names the recovery cmdlet.
            $null = Get-VmDisk $FaultVm | New-KvmDiskSnapshot -ErrorVariable refused -ErrorAction SilentlyContinue
            $refused.Count | Should -BeGreaterThan 0
            ($refused | Out-String) | Should -Match 'Repair-KvmBackup'
            $actions = Repair-KvmBackup -DomainName $FaultVm -Confirm:$false -ErrorVariable repairErrors
            Close-FaultWindow $run.Writer
            $repairErrors | Should -BeNullOrEmpty
            ($actions.Result -join "`n") | Should -Match 'journal closed'
            if ($Point -eq 'DuringCopy') { Get-SetStatus $run.Destination | Should -Be 'Incomplete' }
            Assert-Recovered "SIGKILL $Point + Repair-KvmBackup" $run
        }

        It 'recovers a VM that was shut off on its overlays (a host that crashed mid-backup)' {
            $run = New-FaultRun 'kill-hostcrash'
            $process = Start-BackupProcess (New-BackupScript -Point AfterSnapshot -Destination $run.Destination -Retention $run.Retention -Signal $run.Signal -Marker $run.Marker) $run.Folder
            Wait-FaultPoint AfterSnapshot $run.Signal $run.Destination
            Write-WindowMarker $run
            Stop-ProcessTree $process.Id
            $process.WaitForExit()
            # The guest goes on writing to its overlays until the host goes down.
            $acked = @((Get-GuestWriterLog $run.Writer).Acked).Count
            Wait-Until { @((Get-GuestWriterLog $run.Writer).Acked).Count -ge $acked + 3 } 'the guest to write to its overlays after the kill' 60
            Invoke-Virsh @('destroy', $FaultVm) | Out-Null   # the host goes down: the domain stops, still on its overlays
            (Get-DiskChain $FaultVm -Inactive).Source | Should -BeLike "*.$SnapshotName"
            $actions = Repair-KvmBackup -DomainName $FaultVm -Confirm:$false -ErrorVariable repairErrors
            $repairErrors | Should -BeNullOrEmpty
            Close-FaultWindow $run.Writer
            ($actions | Where-Object Target).Result | Should -BeLike 'committed offline*'
            Test-OnOwnDisks $FaultVm | Should -BeTrue
            (Get-DiskChain $FaultVm -Inactive | Where-Object Target -eq vdb).Format | Should -Be 'raw'
            Invoke-Virsh @('start', $FaultVm) | Out-Null
            Wait-LabGuestAgent -DomainName $FaultVm | Out-Null
            Assert-Recovered 'host crash (SIGKILL + domain destroyed) + Repair' $run
        }
    }

    Describe 'A destination that fills up mid-copy' {
        BeforeAll {
            $script:small = New-TestFolder small-destination
            & mount -t tmpfs -o size=100m tmpfs $small
            if ($LASTEXITCODE) { throw "Cannot mount a tmpfs at $small" }
        }
        AfterAll { & umount $small }

        It 'stops with DestinationFull, marks the set Incomplete, and puts the VM back' {
            $run = New-FaultRun 'full'
            $run.Destination = $small
            # The copy runs throttled; once it has begun writing, someone else fills the destination.
            $job = Start-BackgroundBackup (New-BackupScript -Point DuringCopy -Destination $small -Retention $run.Retention -Signal $run.Signal -Marker $run.Marker)
            try {
                Wait-FaultPoint DuringCopy $run.Signal $small $job
                Write-WindowMarker $run
                & fallocate -l ([IO.DriveInfo]::new($small).AvailableFreeSpace - 64KB) (Join-Path $small 'filler')
                $objects = $job.PowerShell.EndInvoke($job.Handle)
                Close-FaultWindow $run.Writer
                $errors = @($job.PowerShell.Streams.Error)
            }
            finally { $job.PowerShell.Dispose(); $job.Runspace.Dispose() }
            $errors.FullyQualifiedErrorId | Should -Contain 'DestinationFull,OdaKvmBackup.Commands.CopyVmDiskCommand'
            ($errors | Out-String) | Should -Match "ran out of space"
            $objects | ForEach-Object { $_.SetStatus | Should -Be 'Incomplete' }
            Test-OnOwnDisks $FaultVm | Should -BeTrue
            Get-SetStatus $small | Should -Be 'Incomplete'
            Get-ChildItem -Recurse -Filter '*.partial' -Path $small | Should -BeNullOrEmpty
            Remove-Item (Join-Path $small 'filler')
            Set-FaultRowError $run.Row ($errors[0].FullyQualifiedErrorId -split ',')[0]
            Assert-Recovered 'destination full mid-copy' $run
        }
    }

    Describe 'The guest agent stopped' {
        It 'refuses before any snapshot with an error that names the cause and the fix, and changes nothing' {
            $run = New-FaultRun 'agent'
            $xml = (Invoke-Virsh @('dumpxml', $FaultVm, '--inactive')).StdOut
            Open-FaultWindow $run.Writer
            Stop-LabGuestAgent -DomainName $FaultVm -Seconds 15
            $watch = [Diagnostics.Stopwatch]::StartNew()
            $out = Get-VmDisk $FaultVm | New-KvmDiskSnapshot -ErrorVariable errs -ErrorAction SilentlyContinue |
                Copy-VmDisk -Destination $run.Destination | Invoke-BlockCommit | Move-OverlayToRetention -Path $run.Retention
            $toError = $watch.Elapsed.TotalSeconds
            $out | Should -BeNullOrEmpty
            $errs.FullyQualifiedErrorId | Should -Contain 'GuestAgentNotConnected,OdaKvmBackup.Commands.NewKvmDiskSnapshotCommand'
            ($errs | Out-String) | Should -Match 'qemu-guest-agent'
            ($errs | Out-String) | Should -Match '-CrashConsistent'
            (Invoke-Virsh @('dumpxml', $FaultVm, '--inactive')).StdOut | Should -Be $xml
            Get-ChildItem $run.Destination | Should -BeNullOrEmpty
            Get-StrayDiskFolderFiles $FaultVm | Should -BeNullOrEmpty
            Test-Path $JournalFile | Should -BeFalse
            $onOverlays = if (Test-OnOwnDisks $FaultVm) { 0 } else { 1 }
            $onOverlays | Should -Be 0
            Wait-LabGuestAgent -DomainName $FaultVm -TimeoutSeconds 60 | Out-Null
            Close-FaultWindow $run.Writer   # the fault lasted until the agent came back
            $null = Assert-GuestWrites $run.Writer
            Assert-GuestTicks $FaultVm
            Set-FaultRowError $run.Row ($errs[0].FullyQualifiedErrorId -split ',')[0] $toError
            Complete-FaultRow $run.Row 'guest agent stopped: the backup refused before any snapshot'
        }

        It 'takes a crash-consistent backup only when asked, warns, and records it' {
            $run = New-FaultRun 'crash-consistent'
            Open-FaultWindow $run.Writer
            Stop-LabGuestAgent -DomainName $FaultVm -Seconds 10
            $objects = Get-VmDisk $FaultVm | New-KvmDiskSnapshot -CrashConsistent -WarningVariable warn 3>$null |
                Copy-VmDisk -Destination $run.Destination | Invoke-BlockCommit | Move-OverlayToRetention -Path $run.Retention
            ($warn -join ' ') | Should -Match 'crash-consistent'
            $objects.Consistency | Sort-Object -Unique | Should -Be 'CrashConsistent'
            (Get-Content -Raw (Join-Path $objects[0].BackupSet 'backup.json') | ConvertFrom-Json).Consistency | Should -Be 'CrashConsistent'
            Test-OnOwnDisks $FaultVm | Should -BeTrue
            Wait-LabGuestAgent -DomainName $FaultVm -TimeoutSeconds 60 | Out-Null
            Close-FaultWindow $run.Writer   # the fault lasted until the agent came back
            $null = Assert-GuestWrites $run.Writer
            Assert-GuestTicks $FaultVm
            Complete-FaultRow $run.Row 'guest agent stopped: a crash-consistent backup, as asked (-CrashConsistent)'
        }
    }

    Describe 'libvirtd restarted in the middle of a backup' {
        It 'finishes the backup when libvirtd restarts after the snapshot' {
            $run = New-FaultRun 'libvirtd-after-snapshot'
            $objects = Get-VmDisk $FaultVm | New-KvmDiskSnapshot | Add-GuestWritesAfterSnapshot -Marker $run.Marker -Then { Write-WindowMarker $run; Restart-LabDaemon } |
                Copy-VmDisk -Destination $run.Destination | Invoke-BlockCommit | Move-OverlayToRetention -Path $run.Retention
            Close-FaultWindow $run.Writer
            @($objects).Count | Should -Be 2
            Get-SetStatus $run.Destination | Should -Be 'Complete'
            Assert-Recovered 'libvirtd restarted after the snapshot' $run
        }

        It 'finishes the backup when libvirtd restarts while a commit runs' {
            $run = New-FaultRun 'libvirtd-during-commit'
            $job = Start-BackgroundBackup (New-BackupScript -Point DuringCommit -Destination $run.Destination -Retention $run.Retention -Signal $run.Signal -Marker $run.Marker)
            try {
                Wait-FaultPoint DuringCommit $run.Signal $run.Destination $job
                Write-WindowMarker $run
                Test-BlockJobRunning $FaultVm | Should -BeTrue -Because 'the restart must hit a running commit'
                Restart-LabDaemon
                $objects = $job.PowerShell.EndInvoke($job.Handle)
                Close-FaultWindow $run.Writer
                $job.PowerShell.Streams.Error | Should -BeNullOrEmpty
                @($objects).Count | Should -Be 2
            }
            finally { $job.PowerShell.Dispose(); $job.Runspace.Dispose() }
            Assert-Recovered 'libvirtd restarted during the commit' $run
        }
    }

    Describe 'A second backup of the same VM while one runs' {
        It 'is refused, in this process and from another, while other VMs can be backed up meanwhile' {
            $run = New-FaultRun 'concurrent'
            $job = Start-BackgroundBackup (New-BackupScript -Point DuringCopy -Destination $run.Destination -Retention $run.Retention -Signal $run.Signal -Marker $run.Marker)
            try {
                Wait-FaultPoint DuringCopy $run.Signal $run.Destination $job
                Write-WindowMarker $run
                $other = New-FaultRun 'concurrent-second' -NoWriter
                $null = Get-VmDisk $FaultVm | New-KvmDiskSnapshot -ErrorVariable sameProcess -ErrorAction SilentlyContinue |
                    Copy-VmDisk -Destination $other.Destination
                $sameProcess.FullyQualifiedErrorId | Should -Contain 'BackupInProgress,OdaKvmBackup.Commands.NewKvmDiskSnapshotCommand'

                $script = "Import-Module '$ModuleManifest'; Get-VmDisk $FaultVm | New-KvmDiskSnapshot | Copy-VmDisk -Destination '$($other.Destination)'"
                $process = Start-BackupProcess $script $other.Folder
                $process.WaitForExit()
                Get-Content -Raw (Join-Path $other.Folder 'stderr.txt'), (Join-Path $other.Folder 'stdout.txt') | Out-String | Should -Match 'already running'
                Get-ChildItem $other.Destination | Should -BeNullOrEmpty

                $side = Get-VmDisk linux_vm2 | New-KvmDiskSnapshot | Copy-VmDisk -Destination $other.Destination | Invoke-BlockCommit | Move-OverlayToRetention -Path $other.Retention
                @($side).Count | Should -Be 2
                Test-OnOwnDisks linux_vm2 | Should -BeTrue

                $objects = $job.PowerShell.EndInvoke($job.Handle)
                Close-FaultWindow $run.Writer
                @($objects).Count | Should -Be 2
            }
            finally { $job.PowerShell.Dispose(); $job.Runspace.Dispose() }
            Get-SetStatus $run.Destination | Should -Be 'Complete'
            Assert-Recovered 'second backup of the same VM (refused)' $run
        }
    }

    Describe 'A commit that cannot catch up with a busy guest' {
        BeforeEach {
            $script:run = New-FaultRun 'busy'
            $script:busy = "rm -f /run/stop-busy; (while [ ! -f /run/stop-busy ]; do dd if=/dev/urandom of=/mnt/b/busy bs=1M count=2 conv=fsync 2>/dev/null; echo $($run.WindowMarker) > /mnt/a/window.txt; echo $($run.WindowMarker) > /mnt/b/window.txt; done) >/dev/null 2>&1 &"
        }
        AfterEach { $null = Invoke-LabGuestCommand -DomainName $FaultVm -Command 'touch /run/stop-busy' }

        It 'lifts the bandwidth limit of a commit that gains nothing on the guest, and finishes' {
            $objects = Get-VmDisk $FaultVm | New-KvmDiskSnapshot | Add-GuestWritesAfterSnapshot -Marker $run.Marker -AlsoInGuest $busy -Then { Open-FaultWindow $run.Writer } |
                Copy-VmDisk -Destination $run.Destination |
                Invoke-BlockCommit -BandwidthLimit 1 -WarningVariable lifted |
                Move-OverlayToRetention -Path $run.Retention
            Close-FaultWindow $run.Writer
            ($lifted -join ' ') | Should -Match 'does not catch up with the guest.s writes; lifting the limit'
            @($objects).Count | Should -Be 2
            $null = Invoke-LabGuestCommand -DomainName $FaultVm -Command 'touch /run/stop-busy'
            Assert-Recovered 'busy guest: throttled commit unthrottled' $run -SkipNextBackup
        }

        It 'stops a commit that has not caught up within -TimeoutSec, leaves the overlay in place, and Repair-KvmBackup finishes later' {
            $objects = Get-VmDisk $FaultVm | New-KvmDiskSnapshot -WarningVariable stillOn | Add-GuestWritesAfterSnapshot -Marker $run.Marker -AlsoInGuest $busy -Then { Open-FaultWindow $run.Writer } |
                Copy-VmDisk -Destination $run.Destination |
                Invoke-BlockCommit -BandwidthLimit 1 -TimeoutSec 4 -ErrorVariable commitErrors -ErrorAction SilentlyContinue |
                Move-OverlayToRetention -Path $run.Retention
            $commitErrors.FullyQualifiedErrorId | Should -Contain 'PivotNotReady,OdaKvmBackup.Commands.InvokeBlockCommitCommand'
            ($commitErrors | Out-String) | Should -Match 'neither moved nor deleted.*Repair-KvmBackup'
            ($stillOn -join ' ') | Should -Match "'$FaultVm' writes to overlays.*Repair-KvmBackup"
            # Whatever did not catch up still writes to its overlay, which stays beside the disk, in the chain.
            $onOverlay = @(Get-DiskChain $FaultVm | Where-Object { $_.Chain.Count -gt 0 })
            $onOverlay.Count | Should -BeGreaterThan 0
            foreach ($disk in $onOverlay) { Test-Path -LiteralPath $disk.Source | Should -BeTrue }
            @($objects).Count | Should -Be (2 - $onOverlay.Count)
            Get-SetStatus $run.Destination | Should -Be 'Complete'   # the copies were done and verified before the commit
            $null = Invoke-LabGuestCommand -DomainName $FaultVm -Command 'touch /run/stop-busy'
            $actions = Repair-KvmBackup -DomainName $FaultVm -Confirm:$false -ErrorVariable repairErrors
            Close-FaultWindow $run.Writer
            $repairErrors | Should -BeNullOrEmpty
            Get-SetStatus $run.Destination | Should -Be 'Complete' -Because 'Repair-KvmBackup closes a set by the rule the run used'
            Set-FaultRowError $run.Row ($commitErrors[0].FullyQualifiedErrorId -split ',')[0] -Limit '-TimeoutSec 4'
            Assert-Recovered 'busy guest: commit stopped, then Repair' $run
        }
    }
}
