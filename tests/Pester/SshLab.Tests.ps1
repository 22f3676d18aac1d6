#Requires -Modules @{ ModuleName = 'Pester'; ModuleVersion = '5.0' }
# Checks the SSH lab (tests/Lab/OdaKvmSshLab.psm1) provides what the remote-destination tests rely on: the sshd on
# 127.0.0.1:2222, the three aliases in root's ~/.ssh/config, sftp and PowerShell remoting, a byte counter on lo.
# Needs root; installs openssh-server with apt on first run. Leaves the sshd running and the aliases in place.
#   dotnet pwsh -NoProfile -c "Invoke-Pester ./tests/Pester/SshLab.Tests.ps1 -Output Detailed"

BeforeAll {
    Set-StrictMode -Version Latest
    $ErrorActionPreference = 'Stop'
    Import-Module (Join-Path $PSScriptRoot '../Lab/OdaKvmSshLab.psm1') -Force
    $script:Lab = Start-LabSshd

    # ssh as a script would run it: never prompting, host keys checked.
    function Invoke-Ssh([string]$HostAlias, [string[]]$Arguments) {
        $env:LC_ALL = 'C'
        $output = & ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o UpdateHostKeys=no $HostAlias @Arguments 2>&1
        [pscustomobject]@{ ExitCode = $LASTEXITCODE; Output = ($output | ForEach-Object { "$_" }) -join "`n" }
    }
}

Describe 'OdaKvmSshLab' -Tag 'SshLab' {
    It 'runs sshd on 127.0.0.1:2222 and starting it again leaves it running' {
        $again = Start-LabSshd
        $again.ProcessId | Should -Be $Lab.ProcessId
        $again.Port | Should -Be 2222
    }

    It 'logs in as root through odakvm-backup with its own known_hosts' {
        $r = Invoke-Ssh 'odakvm-backup' @('id', '-un')
        $r.ExitCode | Should -Be 0 -Because $r.Output
        $r.Output | Should -Be 'root'
    }

    It 'serves sftp' {
        $copy = Join-Path ([System.IO.Path]::GetTempPath()) "odakvm-sftp-probe-$([guid]::NewGuid().ToString('N'))"
        try {
            $output = "get sshd_config $copy" | & sftp -b - -o BatchMode=yes "odakvm-backup:$(Get-LabSshRoot)" 2>&1
            $LASTEXITCODE | Should -Be 0 -Because ($output -join "`n")
            [System.IO.File]::ReadAllText($copy) | Should -BeLike '*Subsystem sftp internal-sftp*'
        }
        finally { Remove-Item -Force -ErrorAction SilentlyContinue $copy }
    }

    It 'refuses odakvm-unknown (empty known_hosts) when checking is on, whatever its config says' {
        $knownHosts = Join-Path (Get-LabSshRoot) 'known_hosts.unknown'
        $r = Invoke-Ssh 'odakvm-unknown' @('true')
        $r.ExitCode | Should -Be 255
        $r.Output | Should -Match 'No ED25519 host key is known for \[127\.0\.0\.1\]:2222'
        (Get-Item $knownHosts).Length | Should -Be 0
    }

    It 'refuses odakvm-changed (another key for the same host)' {
        $r = Invoke-Ssh 'odakvm-changed' @('true')
        $r.ExitCode | Should -Be 255
        $r.Output | Should -Match 'REMOTE HOST IDENTIFICATION HAS CHANGED'
    }

    It 'offers PowerShell remoting with the pwsh that runs the lab' {
        $version = Invoke-Command -HostName odakvm-backup -ScriptBlock { $PSVersionTable.PSVersion.ToString() }
        $version | Should -Be $PSVersionTable.PSVersion.ToString()
    }

    It 'counts the bytes received on lo' {
        $before = Get-LabLoopbackReceivedBytes
        $null = Invoke-Ssh 'odakvm-backup' @('head', '-c', '1000000', '/dev/zero')
        (Get-LabLoopbackReceivedBytes) - $before | Should -BeGreaterThan 1000000
    }
}

Describe 'The managed block in ~/.ssh/config' -Tag 'SshLab' {
    BeforeAll {
        $script:RealHome = $env:HOME
        $script:FakeHome = Join-Path ([System.IO.Path]::GetTempPath()) "odakvm-sshlab-home-$([guid]::NewGuid().ToString('N'))"
        $null = New-Item -ItemType Directory -Path (Join-Path $FakeHome '.ssh')
        $script:UserConfig = Join-Path $FakeHome '.ssh/config'
        # The user's own settings: global lines first, a Host block, no newline at the end.
        $script:Original = "ServerAliveInterval 60`nIdentityFile ~/.ssh/id_work`n`nHost work`n  HostName work.example`n  User me"
        [System.IO.File]::WriteAllText($UserConfig, $Original)
        [System.IO.File]::SetUnixFileMode($UserConfig, [System.IO.UnixFileMode]'UserRead, UserWrite')
        $env:HOME = $FakeHome
    }
    AfterAll {
        $env:HOME = $RealHome
        Remove-Item -Recurse -Force $FakeHome
    }

    It 'goes first, ends with Host * and is written once however often it is set' {
        Set-LabSshClientConfig
        Set-LabSshClientConfig
        $text = [System.IO.File]::ReadAllText($UserConfig)
        $text | Should -BeLike '# >>> OdaKvmSshLab*'
        ([regex]::Matches($text, 'Host odakvm-backup')).Count | Should -Be 1
        $text.EndsWith("Host *`n# <<< OdaKvmSshLab <<<`n$Original", [StringComparison]::Ordinal) | Should -BeTrue
        [System.IO.File]::GetUnixFileMode($UserConfig) | Should -Be ([System.IO.UnixFileMode]'UserRead, UserWrite')
    }

    It 'is removed leaving the user''s file byte for byte' {
        Remove-LabSshClientConfig
        [System.IO.File]::ReadAllText($UserConfig) | Should -BeExactly $Original
    }

    It 'leaves no file behind when there was none' {
        Remove-Item $UserConfig
        Set-LabSshClientConfig
        Remove-LabSshClientConfig
        Test-Path $UserConfig | Should -BeFalse
    }
}
