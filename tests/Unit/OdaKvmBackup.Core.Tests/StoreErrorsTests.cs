namespace OdaKvmBackup.Core.Tests;

/// <summary>A failed file operation reads as its cause and fix, naming the path once.</summary>
public sealed class StoreErrorsTests
{
    [Fact]
    public void Without_a_known_path_the_message_names_the_file_once_through_the_exception()
    {
        var error = StoreErrors.FromIOException(new UnauthorizedAccessException("Access to the path '/backup/vm' is denied."), path: null);

        Assert.Equal(ErrorIds.PathNotWritable, error.ErrorId);
        Assert.Equal("A file cannot be written: Access to the path '/backup/vm' is denied.", error.Message);
        Assert.Null(error.Target);
    }

    [Theory]
    [InlineData("No space left on device : '/backup/vm/disk'", ErrorIds.DestinationFull, "No space is left at '/backup/vm/disk': ")]
    [InlineData("Input/output error : '/backup/vm/disk'", ErrorIds.StorageFailed, "Reading or writing '/backup/vm/disk' failed: ")]
    public void With_a_path_the_message_names_it_and_the_cause(string io, string id, string start)
    {
        var error = StoreErrors.FromIOException(new IOException(io), "/backup/vm/disk");

        Assert.Equal(id, error.ErrorId);
        Assert.StartsWith(start, error.Message, StringComparison.Ordinal);
        Assert.Equal("/backup/vm/disk", error.Target);
    }
}
