# A backup stopped by a signal (issue 14): SIGTERM (kill, timeout, systemctl stop) and SIGHUP (a closed terminal, a
# dropped SSH session) end the run as Ctrl+C does: the copies stop, the VM goes back on its own disks, the set is
# marked Incomplete, stderr says so naming the signal, and pwsh exits non-zero (143 after SIGTERM, 129 after SIGHUP).
# Nothing is left for Repair-KvmBackup: only SIGKILL and power loss are (Faults.Tests.ps1).
# The times from each signal to the VM back on its own disks and to the exit go to out/signal-results.txt.
BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    . (Join-Path $PSScriptRoot 'FaultHelpers.ps1')
    Import-Module (Join-Path $RepoRoot 'tests/Lab/OdaKvmSshLab.psm1') -Force
    Initialize-Lab -VmName $FaultVm
    Reset-LabVmIfNeeded $FaultVm
    $null = Start-LabSshd   # throws, failing every test here, when sshd cannot start
    # Assert-Recovered writes what it found to $FaultLog: this file's own log, beside the measured times.
    $script:FaultLog = Join-Path $RepoRoot 'out/signal-results.txt'
    New-Item -ItemType Directory -Force -Path (Split-Path $FaultLog) | Out-Null
    Set-Content -Path $FaultLog -Value 'Signals to a running backup, measured by tests/Pester/Signals.Tests.ps1 (times in s from the signal)'
    $script:ExitCodes = @{ TERM = 143; HUP = 129 }
    # How long a stopped run may take to put its VM back and exit: the rollback of a commit throttled to 1 MiB/s
    # included, far below systemd's default of 90 s before it sends SIGKILL.
    $script:ExitBound = 60

    # Sends the stop (the block), then watches until the process has ended, at most $ExitBound s: returns the
    # seconds from the stop to the VM back on its own disks for good (null if it never was while the process ran;
    # a snapshot that libvirtd finishes after the stop takes it off them again) and to the process's end.
    function Measure-Stop([scriptblock] $Send, [scriptblock] $HasEnded, [scriptblock] $EachPoll = {}) {
        $watch = [Diagnostics.Stopwatch]::StartNew()
        & $Send
        $ownDisks = $null
        while (-not (& $HasEnded)) {
            if ($watch.Elapsed.TotalSeconds -gt $ExitBound) { throw "The process was still running $ExitBound s after the stop." }
            & $EachPoll
            if (-not (Test-OnOwnDisks $FaultVm)) { $ownDisks = $null }
            elseif ($null -eq $ownDisks) { $ownDisks = $watch.Elapsed.TotalSeconds }
            Start-Sleep -Milliseconds 50
        }
        $ended = $watch.Elapsed.TotalSeconds
        if ($null -eq $ownDisks -and (Test-OnOwnDisks $FaultVm)) { $ownDisks = $ended }
        [pscustomobject]@{ OwnDisks = $ownDisks; Ended = $ended }
    }

    function Write-SignalTimes([string] $Name, $Times, [string] $ExitCode) {
        $own = if ($null -eq $Times.OwnDisks) { 'never while it ran' } else { '{0:0.00}' -f $Times.OwnDisks }
        Add-Content -Path $FaultLog -Value ("{0,-52} | VM on its own disks after: {1} | process ended after: {2:0.00} | exit code: {3}" -f $Name, $own, $Times.Ended, $ExitCode)
    }

    # The set of a run stopped by a signal: Incomplete with the signal as its reason, or Complete only when every
    # disk had been copied and verified; never a partial copy left.
    function Assert-SetClosedBySignal([string] $Destination, [string] $Signal, [string] $Point) {
        $files = @(Get-ChildItem -Recurse -Filter backup.json -Path $Destination)
        $files.Count | Should -Be 1 -Because 'the copy had begun: the set exists'
        $manifest = Get-Content -Raw $files[0].FullName | ConvertFrom-Json
        if ($Point -eq 'DuringCopy') { $manifest.Status | Should -Be 'Incomplete' -Because 'a copy was cut short' }
        if ($manifest.Status -eq 'Complete') {
            $manifest.Disks.Verified | Should -Not -Contain $false -Because 'a set is Complete only when every disk was copied and verified'
        }
        else {
            $manifest.Status | Should -Be 'Incomplete'
            $manifest.Reason | Should -Match "SIG$Signal"
        }
        Get-ChildItem -Recurse -Filter '*.partial' -Path $Destination | Should -BeNullOrEmpty
    }

    # A script that holds a run in a variable, no pipeline of the module running: the VM on its overlays, the guest's
    # writes made after the snapshot, the signal file written; then $Then.
    function New-HeldRunScript($Run, [string] $Then) {
        $writes = $DuringWrites -creplace '@MARKER@', $Run.Marker
        @"
`$ErrorView = 'NormalView'; `$PSStyle.OutputRendering = 'PlainText'
Import-Module '$ModuleManifest'
Import-Module '$LabModule'
`$disks = Get-VmDisk $FaultVm | New-KvmDiskSnapshot 3>`$null
`$r = Invoke-LabGuestCommand -DomainName $FaultVm -Command '$writes'
if (`$r.ExitCode -ne 0) { throw "guest write failed: `$(`$r.StdErr)" }
Set-Content -Path '$($Run.Signal)' -Value snapshot
$Then
"@
    }

    # A process's state from /proc: gone, or a zombie nobody reaped yet, counts as ended.
    function Test-ProcessEnded([int] $ProcessId) {
        try { $stat = [IO.File]::ReadAllText("/proc/$ProcessId/stat") } catch { return $true }
        $stat.Substring($stat.LastIndexOf(')') + 2, 1) -eq 'Z'
    }

    # The one-liner as an admin runs it over SSH: 'ssh -tt host pwsh -File ...', every stream of the far pwsh on the
    # session's terminal. The far pwsh writes its pid to remote-pid first. The local ssh client's stdin is a pipe kept
    # open, so the session lasts until the client is killed.
    function Start-BackupOverSsh([string] $Script, $Run) {
        $file = Join-Path $Run.Folder 'backup.ps1'
        Set-Content -Path $file -Value ("Set-Content -Path '$(Join-Path $Run.Folder 'remote-pid')' -Value `$PID`n" + $Script)
        $remote = "exec env ODAKVMBACKUP_STATE_DIR='$env:ODAKVMBACKUP_STATE_DIR' '$([Environment]::ProcessPath)' '$([Environment]::GetCommandLineArgs()[0])' -NoProfile -NonInteractive -File '$file'"
        $psi = [Diagnostics.ProcessStartInfo]::new('ssh')
        foreach ($a in '-tt', '-o', 'BatchMode=yes', 'odakvm-backup', $remote) { $psi.ArgumentList.Add($a) }
        $psi.RedirectStandardInput = $true
        $psi.RedirectStandardOutput = $true
        $psi.RedirectStandardError = $true
        $client = [Diagnostics.Process]::Start($psi)
        [pscustomobject]@{
            Client = $client
            Terminal = $client.StandardOutput.ReadToEndAsync()   # what the far terminal showed, read so that ssh never blocks
            Errors = $client.StandardError.ReadToEndAsync()
            PidFile = Join-Path $Run.Folder 'remote-pid'
        }
    }
}
AfterAll { Save-FaultRows 'Signals' }

Describe 'A backup stopped by a signal' {
    BeforeEach { Reset-LabVmIfNeeded $FaultVm }
    AfterEach {
        # A test that failed half way leaves no backup running behind the next one.
        if ($script:process -and -not $script:process.HasExited) { Stop-ProcessTree $script:process.Id; $null = $script:process.WaitForExit(10000) }
        $script:process = $null
    }

    It 'ends like Ctrl+C when pwsh gets SIG<Signal> <Point>' -ForEach @(
        @{ Signal = 'TERM'; Point = 'DuringCopy' }, @{ Signal = 'TERM'; Point = 'DuringCommit' },
        @{ Signal = 'HUP'; Point = 'DuringCopy' }, @{ Signal = 'HUP'; Point = 'DuringCommit' }
    ) {
        $run = New-FaultRun "sig$Signal-$Point"
        $script:process = Start-BackupProcess (New-BackupScript -Point $Point -Destination $run.Destination -Retention $run.Retention -Signal $run.Signal -Marker $run.Marker) $run.Folder
        Wait-FaultPoint $Point $run.Signal $run.Destination
        Write-WindowMarker $run
        if ($Point -eq 'DuringCommit') { Test-BlockJobRunning $FaultVm | Should -BeTrue -Because 'the signal must hit a running commit' }
        $times = Measure-Stop -Send { & kill "-$Signal" $process.Id } -HasEnded { $process.HasExited }
        $process.WaitForExit()
        Write-SignalTimes "SIG$Signal $Point" $times $process.ExitCode
        Close-FaultWindow $run.Writer
        Set-FaultRowError $run.Row "exit code $($process.ExitCode)" $times.Ended "exit within $ExitBound s"
        $process.ExitCode | Should -Be $ExitCodes[$Signal]
        $stderr = (Get-Content -Raw (Join-Path $run.Folder 'stderr.txt')) -replace '\s+', ' '
        $stderr | Should -Match "OdaKvmBackup: .*SIG$Signal"
        $stderr | Should -Match "SIG$Signal.*'$FaultVm' was put back on its own disks"
        Assert-SetClosedBySignal $run.Destination $Signal $Point
        Assert-Recovered "SIG$Signal $Point" $run
    }

    It 'ends like Ctrl+C when pwsh gets SIGTERM while the pipeline waits in another command after the snapshot' {
        # The run's cmdlets are idle: the pipeline sleeps in ForEach-Object, where Ctrl+C would stop it.
        $run = New-FaultRun 'sigTERM-AfterSnapshot'
        $script:process = Start-BackupProcess (New-BackupScript -Point AfterSnapshot -Destination $run.Destination -Retention $run.Retention -Signal $run.Signal -Marker $run.Marker) $run.Folder
        Wait-FaultPoint AfterSnapshot $run.Signal $run.Destination
        Write-WindowMarker $run
        Test-OnOwnDisks $FaultVm | Should -BeFalse -Because 'the signal must find the VM on its overlays'
        $times = Measure-Stop -Send { & kill -TERM $process.Id } -HasEnded { $process.HasExited }
        $process.WaitForExit()
        Write-SignalTimes 'SIGTERM after the snapshot (pipeline in Start-Sleep)' $times $process.ExitCode
        Close-FaultWindow $run.Writer
        Set-FaultRowError $run.Row "exit code $($process.ExitCode)" $times.Ended "exit within $ExitBound s"
        $process.ExitCode | Should -Be 143
        (Get-Content -Raw (Join-Path $run.Folder 'stderr.txt')) -replace '\s+', ' ' | Should -Match "SIGTERM.*'$FaultVm' was put back on its own disks"
        Get-ChildItem -Recurse -File -Path $run.Destination | Should -BeNullOrEmpty -Because 'no copy had begun'
        Assert-Recovered 'SIGTERM after the snapshot' $run
    }

    It 'ends like Ctrl+C when pwsh gets SIGTERM between two statements of a script that holds the run' {
        # No pipeline of the module runs: the disks on their overlays are held in a variable for a later statement.
        $run = New-FaultRun 'sigTERM-between-statements'
        $script = New-HeldRunScript $run @"
Start-Sleep -Seconds 600
`$disks | Copy-VmDisk -Destination '$($run.Destination)' | Invoke-BlockCommit | Move-OverlayToRetention -Path '$($run.Retention)'
"@
        $script:process = Start-BackupProcess $script $run.Folder
        Wait-FaultPoint AfterSnapshot $run.Signal $run.Destination
        Write-WindowMarker $run
        Test-OnOwnDisks $FaultVm | Should -BeFalse -Because 'the signal must find the VM on its overlays'
        $times = Measure-Stop -Send { & kill -TERM $process.Id } -HasEnded { $process.HasExited }
        $process.WaitForExit()
        Write-SignalTimes 'SIGTERM between statements (run held in a variable)' $times $process.ExitCode
        Close-FaultWindow $run.Writer
        Set-FaultRowError $run.Row "exit code $($process.ExitCode)" $times.Ended "exit within $ExitBound s"
        $process.ExitCode | Should -Be 143
        (Get-Content -Raw (Join-Path $run.Folder 'stderr.txt')) -replace '\s+', ' ' | Should -Match "SIGTERM.*'$FaultVm' was put back on its own disks"
        Assert-Recovered 'SIGTERM between statements' $run
    }

    It 'finishes putting the VM back when more signals come during the rollback, and says it will not be interrupted' {
        $run = New-FaultRun 'second-signal'
        $script:process = Start-BackupProcess (New-BackupScript -Point DuringCommit -Destination $run.Destination -Retention $run.Retention -Signal $run.Signal -Marker $run.Marker) $run.Folder
        Wait-FaultPoint DuringCommit $run.Signal $run.Destination
        Write-WindowMarker $run
        Test-BlockJobRunning $FaultVm | Should -BeTrue -Because 'the signals must hit a running commit'
        $stderrFile = Join-Path $run.Folder 'stderr.txt'
        $script:onOverlaysAtSecond = $null
        $times = Measure-Stop -Send {
            & kill -TERM $process.Id
            # The next ones once the first was answered on stderr (the rollback has begun), as an impatient admin would.
            Wait-Until { $process.HasExited -or ((Get-Content -Raw $stderrFile) -match 'SIGTERM') } 'the answer to the first SIGTERM' 30
            $script:onOverlaysAtSecond = -not (Test-OnOwnDisks $FaultVm)
            & kill -TERM $process.Id
            Start-Sleep -Milliseconds 100
            & kill -HUP $process.Id
        } -HasEnded { $process.HasExited }
        $process.WaitForExit()
        Write-SignalTimes 'SIGTERM, then SIGTERM and SIGHUP during the rollback' $times $process.ExitCode
        Close-FaultWindow $run.Writer
        Set-FaultRowError $run.Row "exit code $($process.ExitCode)" $times.Ended "exit within $ExitBound s"
        $onOverlaysAtSecond | Should -BeTrue -Because 'the second signal must come while the VM is still on its overlays'
        $process.ExitCode | Should -Be 143 -Because 'the first signal decides the exit code'
        $stderr = (Get-Content -Raw $stderrFile) -replace '\s+', ' '
        $stderr | Should -Match 'SIGTERM received again.*will not be interrupted'
        $stderr | Should -Match 'SIGHUP received.*will not be interrupted'
        $stderr | Should -Match "SIGTERM.*'$FaultVm' was put back on its own disks"
        Assert-SetClosedBySignal $run.Destination TERM DuringCommit
        Assert-Recovered 'SIGTERM twice and SIGHUP during the rollback' $run
    }
}

Describe 'The nightly script stopped by systemctl stop (SIGTERM)' {
    BeforeEach { Reset-LabVmIfNeeded $FaultVm }
    AfterEach {
        $null = Invoke-LabGuestCommand -DomainName $FaultVm -Command 'rm -f /run/slow-freeze'
        if ($script:process -and -not $script:process.HasExited) { Stop-ProcessTree $script:process.Id; $null = $script:process.WaitForExit(10000) }
        $script:process = $null
    }

    It 'lets the snapshot call finish, puts the VM back, says so and exits 143, when stopped while snapshot-create-as waits for the guest' {
        $run = New-FaultRun 'nightly-sigTERM'
        # The writes are made before the run: during the freeze the guest cannot write. The freeze then takes 6 s.
        $r = Invoke-LabGuestCommand -DomainName $FaultVm -Command "$($DuringWrites -creplace '@MARKER@', $run.Marker); echo 6 > /run/slow-freeze"
        $r.ExitCode | Should -Be 0
        $nightly = Join-Path (Split-Path $ModuleManifest) 'Scripts/Invoke-KvmNightlyBackup.ps1'
        $script:process = Start-Process -FilePath ([Environment]::ProcessPath) -PassThru -ArgumentList @(
            [Environment]::GetCommandLineArgs()[0], '-NoProfile', '-NonInteractive', '-File', $nightly, '-Module', $ModuleManifest,
            '-DomainName', $FaultVm, '-Destination', $run.Destination, '-RetentionPath', $run.Retention) `
            -RedirectStandardOutput (Join-Path $run.Folder 'stdout.txt') -RedirectStandardError (Join-Path $run.Folder 'stderr.txt')
        Wait-Until { $process.HasExited -or (& pgrep -f "snapshot-create-as --domain $FaultVm") } 'virsh snapshot-create-as waiting for the slow freeze' 60
        $process.HasExited | Should -BeFalse -Because "the nightly run must still be running: $(Get-Content -Raw (Join-Path $run.Folder 'stderr.txt'))"
        $folders = (Get-LabDiskMap $FaultVm).Values | ForEach-Object { Split-Path $_ } | Sort-Object -Unique
        $script:overlaysSeen = @()
        Open-FaultWindow $run.Writer
        $times = Measure-Stop -Send { & kill -TERM $process.Id } -HasEnded { $process.HasExited } -EachPoll {
            $script:overlaysSeen += @(Get-ChildItem -LiteralPath $folders -File -Filter "*.$SnapshotName" -ErrorAction SilentlyContinue | ForEach-Object Name)
        }
        $process.WaitForExit()
        Write-SignalTimes 'nightly script, SIGTERM during snapshot-create-as' $times $process.ExitCode
        Close-FaultWindow $run.Writer
        Set-FaultRowError $run.Row "exit code $($process.ExitCode)" $times.Ended "exit within $ExitBound s"
        # libvirtd took the snapshot after the signal: the rollback had overlays to take away (else this proves nothing).
        ($overlaysSeen | Sort-Object -Unique) | Should -Be @("disco_secundario.$SnapshotName", "linux_boot.$SnapshotName")
        $process.ExitCode | Should -Be 143
        (Get-Content -Raw (Join-Path $run.Folder 'stderr.txt')) -replace '\s+', ' ' | Should -Match "SIGTERM.*'$FaultVm' was put back on its own disks"
        Assert-Recovered 'nightly script, SIGTERM during snapshot-create-as' $run -NoWindowMarker
    }
}

Describe 'The one-liner run in an SSH session that drops' {
    BeforeEach { Reset-LabVmIfNeeded $FaultVm }
    AfterEach {
        if ($script:session -and -not $script:session.Client.HasExited) { $script:session.Client.Kill() }
        if ($script:remotePid -and -not (Test-ProcessEnded $script:remotePid)) { & kill -KILL $script:remotePid }
        $script:session = $null
        $script:remotePid = $null
    }

    It 'puts the VM back when the connection drops <Point>: the far pwsh gets SIGHUP' -ForEach @(
        @{ Point = 'DuringCopy' }, @{ Point = 'DuringCommit' }
    ) {
        $run = New-FaultRun "ssh-drop-$Point"
        $script:session = Start-BackupOverSsh (New-BackupScript -Point $Point -Destination $run.Destination -Retention $run.Retention -Signal $run.Signal -Marker $run.Marker) $run
        Wait-Until { Test-Path $session.PidFile } 'the far pwsh to start' 60
        Start-Sleep -Milliseconds 200
        $script:remotePid = [int](Get-Content $session.PidFile)
        # It runs on the session's terminal (a controlling tty), as it would for an admin.
        $stat = [IO.File]::ReadAllText("/proc/$remotePid/stat")
        [int]($stat.Substring($stat.LastIndexOf(')') + 2).Split(' ')[4]) | Should -Not -Be 0 -Because 'the far pwsh must have the session terminal as its controlling tty'
        Wait-FaultPoint $Point $run.Signal $run.Destination
        Write-WindowMarker $run
        if ($Point -eq 'DuringCommit') { Test-BlockJobRunning $FaultVm | Should -BeTrue -Because 'the drop must hit a running commit' }
        $times = Measure-Stop -Send { $session.Client.Kill() } -HasEnded { Test-ProcessEnded $remotePid }
        Write-SignalTimes "SSH session dropped $Point (far pwsh)" $times 'not seen (no parent left to see it)'
        Close-FaultWindow $run.Writer
        Set-FaultRowError $run.Row 'SIGHUP (session dropped), far pwsh ended' $times.Ended "exit within $ExitBound s"
        # Its terminal is gone, so what it said went nowhere: the set's manifest records why the run stopped.
        Assert-SetClosedBySignal $run.Destination HUP $Point
        Assert-Recovered "SSH session dropped $Point" $run
    }

    It 'puts the VM back when the connection drops while a script holds the run and keeps writing to the terminal' {
        # The run is held in a variable; the script writes to its terminal all the time. Once the terminal is gone
        # those writes fail, and pwsh ends itself at once (FailFast) when it cannot show the error: the rollback
        # must not be cut short by that.
        $run = New-FaultRun 'ssh-drop-held'
        $script = New-HeldRunScript $run @"
while (`$true) { Write-Progress -Activity 'Waiting for the copy' -Status (Get-Date -Format o); Write-Host "waiting `$(Get-Date -Format o)"; Start-Sleep -Milliseconds 50 }
"@
        $script:session = Start-BackupOverSsh $script $run
        Wait-Until { Test-Path $session.PidFile } 'the far pwsh to start' 60
        Start-Sleep -Milliseconds 200
        $script:remotePid = [int](Get-Content $session.PidFile)
        Wait-FaultPoint AfterSnapshot $run.Signal $run.Destination
        Write-WindowMarker $run
        Test-OnOwnDisks $FaultVm | Should -BeFalse -Because 'the drop must find the VM on its overlays'
        $times = Measure-Stop -Send { $session.Client.Kill() } -HasEnded { Test-ProcessEnded $remotePid }
        Write-SignalTimes 'SSH session dropped, run held, script writing' $times 'not seen (no parent left to see it)'
        Close-FaultWindow $run.Writer
        Set-FaultRowError $run.Row 'SIGHUP (session dropped), far pwsh ended' $times.Ended "exit within $ExitBound s"
        Assert-Recovered 'SSH session dropped, run held, script writing' $run
    }
}
