# From a jump host, through PowerShell SSH remoting: a real sshd on loopback with the PowerShell subsystem, reached
# by the alias in root's ~/.ssh/config, runs the one-line backup of the lab VM. What comes back must be what a user
# works with: objects with their properties and views, progress, warnings and errors.
BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    Import-Module (Join-Path $RepoRoot 'tests/Lab/OdaKvmSshLab.psm1') -Force
    Initialize-Lab -VmName linux_vm
    Reset-LabVmIfNeeded linux_vm
    $null = Start-LabSshd   # throws, failing every test here, when sshd cannot start

    $script:backup = New-TestFolder remoting-backup
    $script:retention = New-TestFolder remoting-retention
    # Run as a script would, in a PowerShell instance of its own so that every stream can be looked at; its runspace
    # has this host, as an interactive session has, which is what remote warnings and progress are written through.
    $runspace = [runspacefactory]::CreateRunspace($Host)
    $runspace.Open()
    $ps = [powershell]::Create()
    $ps.Runspace = $runspace
    $null = $ps.AddScript({
            param($manifest, $backup, $retention, $state)
            Invoke-Command -HostName odakvm-backup -ScriptBlock {
                $env:ODAKVMBACKUP_STATE_DIR = $using:state
                Import-Module $using:manifest
                'linux_vm', 'no_such_vm' | Get-VmDisk | New-KvmDiskSnapshot -CrashConsistent |
                    Copy-VmDisk -Destination $using:backup | Invoke-BlockCommit | Move-OverlayToRetention -Path $using:retention
            }
        }).AddArgument($ModuleManifest).AddArgument($backup).AddArgument($retention).AddArgument($env:ODAKVMBACKUP_STATE_DIR)
    $script:objects = @($ps.Invoke())
    $script:errors = @($ps.Streams.Error)
    $script:warnings = @($ps.Streams.Warning)
    $script:progress = @($ps.Streams.Progress)
    $ps.Dispose()
    $runspace.Dispose()
}
AfterAll { Assert-GuestTicks linux_vm }

Describe 'The one-liner through Invoke-Command -HostName' {
    It 'backs up the lab VM on the host and returns its objects, with their properties' {
        $objects.Count | Should -Be 2
        $objects[0].PSObject.TypeNames[0] | Should -Be 'Deserialized.OdaKvmBackup.Core.Steps.VmDiskBackup'
        $objects.DomainName | Sort-Object -Unique | Should -Be 'linux_vm'
        $objects.Stage | Sort-Object -Unique | Should -Be 'Retained'
        $objects.SetStatus | Sort-Object -Unique | Should -Be 'Complete'
        $objects.Consistency | Sort-Object -Unique | Should -Be 'CrashConsistent'
        foreach ($o in $objects) { Test-Path -LiteralPath $o.BackupFile | Should -BeTrue }
        Test-OnOwnDisks linux_vm | Should -BeTrue
    }

    It 'keeps the table view of the objects on the jump host' {
        $table = $objects | Format-Table | Out-String -Width 200
        $table | Should -Match 'DomainName\s+Target\s+Stage\s+Set\s+Data\s+OnOverlay\s+BackupFile'
        $table | Should -Match 'linux_vm\s+vd[ab]\s+Retained\s+Complete'
    }

    It 'shows them in the same table on a jump host, where the module imports for its views and its cmdlets refuse to run' {
        # A fresh pwsh that plays a Windows jump host: the module imported, its platform check turned to "not a
        # KVM host"; the objects come from the host through the same sshd.
        $script = @"
Import-Module '$ModuleManifest'
[OdaKvmBackup.Commands.KvmHostPlatform].GetField('IsKvmHost', [Reflection.BindingFlags]'NonPublic,Static').SetValue(`$null, `$false)
try { Get-VmDisk linux_vm -ErrorAction Stop } catch { 'local: ' + `$_.FullyQualifiedErrorId }
Invoke-Command -HostName odakvm-backup -ScriptBlock { Import-Module '$ModuleManifest'; Get-VmDisk linux_vm } | Format-Table | Out-String -Width 200
"@
        $pwsh = @([Environment]::ProcessPath, [Environment]::GetCommandLineArgs()[0])
        $out = & $pwsh[0] $pwsh[1] -NoProfile -NonInteractive -Command $script 2>&1 | Out-String
        $LASTEXITCODE | Should -Be 0 -Because $out
        $out | Should -Match 'local: NotOnKvmHost,OdaKvmBackup\.Commands\.GetVmDiskCommand'
        $out | Should -Match 'DomainName\s+Target\s+Format\s+OnOverlay\s+Source'
        $out | Should -Match 'linux_vm\s+vda\s+qcow2\s+False'
    }

    It 'brings back the errors, as records a script can match, and the warnings' {
        $errors.Count | Should -Be 1
        $errors[0].FullyQualifiedErrorId | Should -Be 'DomainNotFound,OdaKvmBackup.Commands.GetVmDiskCommand'
        $errors[0].ToString() | Should -Match "no domain named 'no_such_vm'"
        ($warnings.Message -join ' ') | Should -Match 'crash-consistent'
    }

    It 'brings back the progress of the copy' {
        @($progress | Where-Object { $_.Activity -like 'Copying*' }).Count | Should -BeGreaterThan 0
    }
}
