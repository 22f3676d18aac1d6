using System.Text;
using OdaKvmBackup.WayBack.Tests.Support;

namespace OdaKvmBackup.WayBack.Tests;

public sealed class ConsoleLogReaderTests : IDisposable
{
    private readonly TempFolder _folder = new();

    public void Dispose() => _folder.Dispose();

    private void Append(string path, string text) => File.AppendAllText(path, text);

    [Fact]
    public void Each_read_takes_only_what_was_appended_since_the_last()
    {
        var path = _folder.Combine("console.log");
        var reader = new ConsoleLogReader(path);
        Assert.False(reader.ReadNew()); // no log yet
        Append(path, "Booting the kernel\n");
        Assert.True(reader.ReadNew());
        Assert.Equal(19, reader.Offset);
        Assert.False(reader.ReadNew()); // nothing new
        Assert.Equal(19, reader.Offset);
        Append(path, "vm1 log");
        Append(path, "in: ");
        Assert.True(reader.ReadNew());
        Assert.Equal(30, reader.Offset);
        Assert.Equal("Booting the kernel\nvm1 login: ", reader.Window);
        Assert.Equal("Booting the kernel | vm1 login:", reader.Tail());
    }

    [Fact]
    public void A_character_split_between_two_reads_is_read_whole()
    {
        var path = _folder.Combine("console.log");
        var reader = new ConsoleLogReader(path);
        var bytes = Encoding.UTF8.GetBytes("Willkommen, Übersicht\n");
        File.WriteAllBytes(path, bytes[..12]); // ends inside 'Ü'
        reader.ReadNew();
        using (var stream = new FileStream(path, FileMode.Append))
            stream.Write(bytes[12..]);
        reader.ReadNew();
        Assert.Equal("Willkommen, Übersicht\n", reader.Window);
    }

    [Fact]
    public void A_console_that_writes_without_end_is_read_up_to_the_cap_and_only_its_last_characters_are_kept()
    {
        var path = _folder.Combine("console.log");
        var reader = new ConsoleLogReader(path);
        var line = new string('x', 1023) + "\n";
        using (var stream = new StreamWriter(path))
        {
            for (var i = 0; i < (ConsoleLogReader.CapBytes >> 10) + 4096; i++) // 4 MiB past the cap
                stream.Write(line);
        }
        Assert.True(reader.ReadNew());
        Assert.Equal(ConsoleLogReader.CapBytes, reader.Offset);
        Assert.True(reader.Capped);
        Assert.Equal(ConsoleLogReader.WindowChars, reader.Window.Length);
        Append(path, "login: ");
        Assert.False(reader.ReadNew()); // past the cap nothing more is read
        Assert.Contains("more than 16 MiB", reader.Tail(), StringComparison.Ordinal);
    }
}
